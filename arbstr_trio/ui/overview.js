// Overview: what the proxy did over a window, from one GET /v1/stats with buckets.
//
// The cards are the window's totals exactly as the proxy computed them (cost and
// savings in sats with its three decimals, exact nearest-rank percentiles), so
// they can be checked against /v1/stats by eye or by a test. The charts are the
// same numbers per hour or per day.

import { getJson } from "./api.js";
import { legend, timeChart } from "./charts.js";
import { count, fill, h, millis, notice, percent, sats } from "./dom.js";
import { firstRequest } from "./onboarding.js";

const RANGES = [
  ["last_1h", "Last hour", "hour"],
  ["last_24h", "Last 24 hours", "hour"],
  ["last_7d", "Last 7 days", "hour"],
  ["last_30d", "Last 30 days", "day"],
];

export function createOverview(root) {
  const state = { range: "last_24h", stats: null };
  const rangeSelect = h(
    "select",
    { id: "overview-range", "aria-label": "Range", onchange: () => change() },
    RANGES.map(([value, label]) => h("option", { value, selected: value === state.range }, label)),
  );
  const body = h("div", { class: "overview-body" }, notice("loading", "Loading stats…"));
  fill(
    root,
    h("div", { class: "toolbar" }, h("h2", {}, "Overview"), h("label", {}, "Range ", rangeSelect)),
    body,
  );

  function change() {
    state.range = rangeSelect.value;
    state.stats = null;
    fill(body, notice("loading", "Loading stats…"));
    refresh();
  }

  let generation = 0;
  async function refresh() {
    const mine = ++generation;
    const [, , bucket] = RANGES.find(([value]) => value === state.range);
    try {
      const stats = await getJson("/v1/stats", { range: state.range, bucket });
      let firstEver = false;
      if (stats.totals.requests === 0) {
        // Empty window, or an empty log? Only the latter gets the how-to.
        const [listing, models] = await Promise.all([
          getJson("/v1/requests", { limit: 1 }),
          getJson("/v1/models").catch(() => ({ data: [] })),
        ]);
        firstEver = listing.data.length === 0;
        state.model = models.data[0]?.id;
      }
      if (mine !== generation) return; // a newer refresh (another range) won
      state.stats = stats;
      render(stats, bucket, firstEver);
    } catch (error) {
      if (mine !== generation) return;
      // Keep the last numbers on a failed poll; say what went wrong above them.
      const shown = state.stats ? [...body.children].filter((c) => !c.dataset.notice) : [];
      fill(body, notice("error", `Could not load stats: ${error.message}`), shown);
    }
  }

  function render(stats, bucket, firstEver) {
    const t = stats.totals;
    if (firstEver) {
      fill(body, firstRequest(state.model));
      return;
    }
    const card = (name, label, value, hint = null) =>
      h(
        "div",
        { class: "card" },
        h("div", { class: "card-label" }, label),
        h("div", { class: "card-value", "data-stat": name }, value),
        hint && h("div", { class: "card-hint" }, hint),
      );
    const cards = h(
      "div",
      { class: "cards" },
      card(
        "requests",
        "Requests",
        count(t.requests),
        `${t.errors} error${t.errors === 1 ? "" : "s"}`,
      ),
      card("success_rate", "Success rate", percent(t.successes, t.requests), `${t.successes} ok`),
      card("cost_sats", "Spend (sats)", sats(t.cost_sats)),
      card("savings_sats", "Savings (sats)", sats(t.savings_sats), "vs. the dearest eligible"),
      card("latency_p50", "Latency p50", millis(t.latency_ms.p50)),
      card("latency_p95", "Latency p95", millis(t.latency_ms.p95)),
    );
    const times = stats.buckets.map((b) => new Date(b.start));
    const timeLabel = bucket === "day" ? dayLabel : hourLabel;
    const chart = (title, unit, series) =>
      h(
        "figure",
        { class: "chart-box" },
        h("figcaption", {}, title),
        timeChart({ title, times, series, unit, timeLabel }),
        legend(series),
      );
    const buckets = stats.buckets;
    fill(
      body,
      t.requests === 0 ? notice("empty", "No requests in this range.") : null,
      cards,
      h(
        "div",
        { class: "charts" },
        chart("Requests", "requests", [
          { name: "succeeded", kind: "bar", values: buckets.map((b) => b.successes) },
          { name: "failed", kind: "bar", values: buckets.map((b) => b.errors) },
        ]),
        chart("Spend and savings", "sats", [
          { name: "spend", kind: "bar", values: buckets.map((b) => b.cost_sats) },
          { name: "savings", kind: "bar", values: buckets.map((b) => b.savings_sats) },
        ]),
        chart("Latency", "ms", [
          { name: "p50", kind: "line", values: buckets.map((b) => b.latency_ms.p50) },
          { name: "p95", kind: "line", values: buckets.map((b) => b.latency_ms.p95) },
        ]),
      ),
      h(
        "p",
        { class: "footnote" },
        `${stats.since} to ${stats.until} (UTC), per ${bucket}. ` +
          `${t.prompt_tokens} prompt and ${t.completion_tokens} completion tokens` +
          (t.usage_missing ? `; ${t.usage_missing} answers reported no usage.` : "."),
      ),
    );
  }

  return { refresh, pollMs: 10_000 };
}

function hourLabel(time) {
  return time.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: false });
}

function dayLabel(time) {
  return time.toLocaleDateString([], { month: "short", day: "numeric" });
}
