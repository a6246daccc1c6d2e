// Requests: the request log, newest first (GET /v1/requests), filterable, each row
// expandable to its attempts (GET /v1/requests/{id}).
//
// New requests arrive two ways: a "request" event from the live feed is put at the
// top at once; without the feed, the first page is fetched again every few seconds.
// Either way the rows a user opened stay open.

import { getJson } from "./api.js";
import { clock, fill, h, millis, notice, sats } from "./dom.js";
import { firstRequest } from "./onboarding.js";

const PAGE = 50;

export function createRequests(root, { live }) {
  const filters = { model: "", provider: "", outcome: "", status: "" };
  const open = new Map(); // request id -> its detail row (kept across refreshes)
  let rows = [];
  let nextCursor = null;
  let optionsLoaded = false;

  const modelSelect = h("select", { id: "filter-model", "aria-label": "Model" });
  const providerSelect = h("select", { id: "filter-provider", "aria-label": "Provider" });
  const outcomeSelect = h(
    "select",
    { id: "filter-outcome", "aria-label": "Outcome" },
    h("option", { value: "" }, "all outcomes"),
    h("option", { value: "false" }, "errors only"),
    h("option", { value: "true" }, "successes only"),
  );
  const statusInput = h("input", {
    id: "filter-status",
    type: "number",
    min: 100,
    max: 599,
    placeholder: "status",
    "aria-label": "HTTP status",
  });
  for (const control of [modelSelect, providerSelect, outcomeSelect, statusInput]) {
    control.addEventListener("change", () => {
      filters.model = modelSelect.value;
      filters.provider = providerSelect.value;
      filters.outcome = outcomeSelect.value;
      filters.status = statusInput.value.trim();
      load();
    });
  }
  const body = h("div", {}, notice("loading", "Loading requests…"));
  const more = h("button", { type: "button", class: "secondary", hidden: true }, "Load more");
  more.addEventListener("click", () => load({ append: true }));
  fill(
    root,
    h(
      "div",
      { class: "toolbar" },
      h("h2", {}, "Requests"),
      h("div", { class: "filters" }, modelSelect, providerSelect, outcomeSelect, statusInput),
    ),
    body,
    more,
  );

  async function loadOptions() {
    const [models, providers] = await Promise.all([getJson("/v1/models"), getJson("/providers")]);
    fill(
      modelSelect,
      h("option", { value: "" }, "any model"),
      models.data.map((m) => h("option", { value: m.id }, m.id)),
    );
    fill(
      providerSelect,
      h("option", { value: "" }, "any provider"),
      providers.providers.map((p) => h("option", { value: p.name }, p.name)),
    );
    optionsLoaded = true;
  }

  function query(extra) {
    return {
      model: filters.model,
      provider: filters.provider,
      success: filters.outcome,
      status: filters.status,
      ...extra,
    };
  }

  let generation = 0;
  async function load({ append = false, quiet = false } = {}) {
    const mine = ++generation;
    if (!append && !quiet) fill(body, notice("loading", "Loading requests…"));
    try {
      if (!optionsLoaded) await loadOptions();
      const limit = append ? PAGE : Math.min(500, Math.max(PAGE, quiet ? rows.length : PAGE));
      const page = await getJson(
        "/v1/requests",
        query({ limit, cursor: append ? nextCursor : null }),
      );
      if (mine !== generation) return;
      rows = append ? [...rows, ...page.data] : page.data;
      nextCursor = page.next_cursor;
      render();
    } catch (error) {
      if (mine !== generation) return;
      const kept = quiet && rows.length ? [...body.children].filter((c) => !c.dataset.notice) : [];
      fill(body, notice("error", `Could not load requests: ${error.message}`), kept);
    }
  }

  function filtered() {
    return Object.values(filters).some(Boolean);
  }

  function render() {
    more.hidden = !nextCursor;
    if (rows.length === 0) {
      fill(
        body,
        filtered()
          ? notice("empty", "No requests match these filters.")
          : firstRequest(modelSelect.options[1]?.value),
      );
      return;
    }
    const tbody = h("tbody", {});
    for (const request of rows) {
      tbody.append(summaryRow(request));
      const detail = open.get(request.request_id);
      if (detail) tbody.append(detail);
    }
    fill(
      body,
      h(
        "table",
        { class: "table clickable", id: "requests-table" },
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            ["Time", "Model", "Provider", "Status", "Latency", "Cost (sats)", "Attempts"].map((t) =>
              h("th", {}, t),
            ),
          ),
        ),
        tbody,
      ),
    );
  }

  function summaryRow(request) {
    const ok = request.success;
    const tr = h(
      "tr",
      {
        class: ok ? "" : "failed",
        "data-request-id": request.request_id,
        tabindex: 0,
        "aria-expanded": open.has(request.request_id) ? "true" : "false",
      },
      h("td", { title: request.started_at }, clock(request.started_at)),
      h(
        "td",
        {},
        request.model ?? "–",
        request.streaming ? h("span", { class: "tag" }, "stream") : null,
      ),
      h("td", {}, request.provider ?? "–"),
      h(
        "td",
        {},
        h("span", { class: `badge ${ok ? "badge-ok" : "badge-error"}` }, String(request.status)),
        request.error_type ? h("span", { class: "muted" }, ` ${request.error_type}`) : null,
      ),
      h("td", { class: "num" }, millis(request.latency_ms)),
      h("td", { class: "num" }, request.usage_missing ? "no usage" : sats(request.cost_sats)),
      h("td", { class: "num" }, String(request.attempt_count ?? "–")),
    );
    const toggle = () => expand(request.request_id, tr);
    tr.addEventListener("click", toggle);
    tr.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        toggle();
      }
    });
    return tr;
  }

  async function expand(id, tr) {
    const existing = open.get(id);
    if (existing) {
      existing.remove();
      open.delete(id);
      tr.setAttribute("aria-expanded", "false");
      return;
    }
    const cell = h("td", { colspan: 7 }, notice("loading", "Loading attempts…"));
    const detail = h("tr", { class: "detail", "data-detail-for": id }, cell);
    open.set(id, detail);
    tr.after(detail);
    tr.setAttribute("aria-expanded", "true");
    try {
      const request = await getJson(`/v1/requests/${encodeURIComponent(id)}`);
      fill(cell, attemptsTable(request));
    } catch (error) {
      fill(cell, notice("error", `Could not load attempts: ${error.message}`));
    }
  }

  // A finished request from the feed: shown at once if it passes the filters.
  live.subscribe((event) => {
    if (event.type !== "request") return;
    const request = fromEvent(event);
    if (!request.request_id || !matches(request)) return;
    if (rows.some((r) => r.request_id === request.request_id)) return;
    rows = [request, ...rows];
    if (!root.hidden) render();
  });

  function matches(request) {
    return (
      (!filters.model || request.model === filters.model) &&
      (!filters.provider || request.provider === filters.provider) &&
      (!filters.outcome || String(request.success) === filters.outcome) &&
      (!filters.status || String(request.status) === filters.status)
    );
  }

  // Poll only while the feed is down: with it, new rows arrive by themselves.
  function refresh() {
    return live.connected && rows.length ? undefined : load({ quiet: rows.length > 0 });
  }

  return { refresh, pollMs: 5_000, enter: () => load() };
}

function attemptsTable(request) {
  const attempts = request.attempts ?? [];
  const summary = h(
    "p",
    { class: "muted" },
    `Request ${request.request_id}: ${request.prompt_tokens ?? "?"} prompt + ` +
      `${request.completion_tokens ?? "?"} completion tokens` +
      (request.ttfb_ms !== null ? `, first byte after ${request.ttfb_ms} ms` : "") +
      (request.policy ? `, policy ${request.policy}` : "") +
      (request.client_key ? `, key ${request.client_key}` : "") +
      ".",
  );
  if (attempts.length === 0) {
    return h("div", {}, summary, notice("empty", "No attempt was made (refused before routing)."));
  }
  return h(
    "div",
    {},
    summary,
    h(
      "table",
      { class: "table attempts" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          ["#", "Provider", "Outcome", "Status", "Duration", "Error"].map((t) => h("th", {}, t)),
        ),
      ),
      h(
        "tbody",
        {},
        attempts.map((attempt, index) =>
          h(
            "tr",
            { "data-attempt": index + 1 },
            h(
              "td",
              {},
              String(index + 1),
              attempt.hedge ? h("span", { class: "tag" }, "hedge") : null,
            ),
            h("td", {}, attempt.provider),
            h("td", {}, attempt.outcome),
            h("td", {}, attempt.status === null ? "–" : String(attempt.status)),
            h("td", { class: "num" }, millis(attempt.duration_ms)),
            h("td", {}, attempt.error ?? ""),
          ),
        ),
      ),
    ),
  );
}

/** A live "request" event in the shape of a /v1/requests row (missing fields blank). */
function fromEvent(event) {
  return {
    request_id: event.request_id ?? event.id,
    started_at: event.started_at ?? new Date((event.ts ?? Date.now() / 1000) * 1000).toISOString(),
    model: event.model ?? null,
    provider: event.provider ?? null,
    streaming: Boolean(event.streaming),
    status: event.status,
    success: Boolean(event.success),
    error_type: event.error_type ?? null,
    latency_ms: event.latency_ms ?? null,
    // The feed sends cost as the exact x-arbstr-cost-sats text ("0.016"), null if unknown.
    cost_sats:
      event.cost_sats === null || event.cost_sats === undefined ? null : Number(event.cost_sats),
    usage_missing:
      Boolean(event.success) && (event.cost_sats === null || event.cost_sats === undefined),
    attempt_count: event.attempt_count ?? event.attempts ?? null,
  };
}
