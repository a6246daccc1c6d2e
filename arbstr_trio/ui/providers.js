// Providers: what each costs (GET /providers) beside how it is doing now (GET /health).
//
// /health is computed at the moment it is asked, so polling it every few seconds is
// what keeps this view current even without the live feed; with the feed, a breaker
// or cooldown event triggers a refresh at once instead of at the next poll.

import { getHealth, getJson } from "./api.js";
import { duration, fill, h, notice } from "./dom.js";

const REFRESHING_EVENTS = new Set([
  "breaker",
  "cooldown_started",
  "cooldown_ended",
  "attempt_failed",
  "request",
]);

export function createProviders(root, { live }) {
  const status = h("span", { class: "badge", "data-health": "" }, "…");
  const body = h("div", {}, notice("loading", "Loading providers…"));
  fill(root, h("div", { class: "toolbar" }, h("h2", {}, "Providers"), status), body);
  let config = null; // /providers changes only on reload or admin edits: fetched less often
  let configAge = 0;
  let shown = false;

  async function refresh() {
    try {
      if (config === null || ++configAge >= 10) {
        config = await getJson("/providers");
        configAge = 0;
      }
      const health = await getHealth();
      render(config.providers, health);
      shown = true;
    } catch (error) {
      const kept = shown ? [...body.children].filter((c) => !c.dataset.notice) : [];
      fill(body, notice("error", `Could not load providers: ${error.message}`), kept);
    }
  }

  function render(providers, health) {
    status.textContent = health.status;
    status.className = `badge badge-${health.status}`;
    status.dataset.health = health.status;
    if (providers.length === 0) {
      fill(body, notice("empty", "No providers are configured."));
      return;
    }
    const states = new Map(health.providers.map((p) => [p.name, p]));
    const rows = providers.map((provider) => row(provider, states.get(provider.name)));
    fill(
      body,
      h(
        "table",
        { class: "table", id: "providers-table" },
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            [
              "Provider",
              "Tier",
              "Models",
              "Input / output (sats per 1M)",
              "Base fee",
              "Breaker",
              "Cooldowns",
              "Headroom",
              "In flight",
            ].map((title) => h("th", {}, title)),
          ),
        ),
        h("tbody", {}, rows),
      ),
      h(
        "p",
        { class: "footnote" },
        `Proxy ${health.version}, up ${duration(health.uptime_s)}, ` +
          `${health.in_flight} chat request(s) in flight.`,
      ),
    );
  }

  function row(provider, state = {}) {
    const breaker = state.breaker ?? "unknown";
    const now = Date.now() / 1000;
    let breakerHint = null;
    if (breaker === "open" && state.probe_at) {
      breakerHint = `probe in ${duration(state.probe_at - now)}`;
    } else if (state.consecutive_failures) {
      breakerHint = `${state.consecutive_failures} failure(s) in a row`;
    }
    const cooldowns = state.cooldowns ?? [];
    return h(
      "tr",
      { "data-provider": provider.name },
      h("td", {}, h("strong", {}, provider.name), h("div", { class: "muted" }, provider.url)),
      h("td", {}, provider.tier),
      h("td", {}, provider.models.length ? provider.models.join(", ") : "any"),
      h("td", { class: "num" }, `${provider.input_rate} / ${provider.output_rate}`),
      h("td", { class: "num" }, String(provider.base_fee)),
      h(
        "td",
        { "data-field": "breaker" },
        h("span", { class: `badge badge-${breaker}`, "data-breaker": breaker }, breaker),
        breakerHint && h("div", { class: "muted" }, breakerHint),
      ),
      h(
        "td",
        { "data-field": "cooldowns" },
        cooldowns.length
          ? cooldowns.map((c) =>
              h("div", { class: "cooldown" }, `${c.model}: ${duration(c.seconds_left)} left`),
            )
          : h("span", { class: "muted" }, "none"),
      ),
      h("td", { "data-field": "headroom" }, headroom(state)),
      h("td", { class: "num", "data-field": "in_flight" }, String(state.in_flight ?? 0)),
    );
  }

  /** What is left before a limit: the provider's own word, then the configured limits. */
  function headroom(state) {
    const lines = [];
    for (const left of state.remaining ?? []) {
      const parts = [];
      if (left.requests !== undefined) parts.push(`${left.requests} requests`);
      if (left.tokens !== undefined) parts.push(`${left.tokens} tokens`);
      lines.push(`${left.model}: ${parts.join(", ")} left`);
    }
    const names = {
      requests_per_minute: "requests/min",
      requests_per_day: "requests/day",
      tokens_per_minute: "tokens/min",
      max_concurrent: "concurrent",
    };
    for (const [name, use] of Object.entries(state.limits ?? {})) {
      lines.push(`${names[name] ?? name}: ${use.used} of ${use.limit}`);
    }
    return lines.length
      ? lines.map((line) => h("div", { class: "headroom" }, line))
      : h("span", { class: "muted" }, "no limits known");
  }

  // Several events in a burst make one refresh, not one each.
  let pending = null;
  live.subscribe((event) => {
    if (root.hidden || !REFRESHING_EVENTS.has(event.type) || pending) return;
    pending = setTimeout(() => {
      pending = null;
      refresh();
    }, 250);
  });

  return { refresh, pollMs: 2_000 };
}
