// Playground: one streamed chat completion, read as the proxy relays it.
//
// fetch() + ReadableStream rather than EventSource: EventSource can only GET and
// cannot send the key. The SSE parser below is the minimum the proxy's streams need:
// events split on a blank line (LF or CRLF), `data:` lines joined, `[DONE]` ends it.
// When the stream ends, the proxy's metadata (the `arbstr` field of the last chunk)
// gives provider and cost; the response headers give the request id and retries;
// the request log (GET /v1/requests/{id}) gives the attempts.

import { getJson, request } from "./api.js";
import { fill, h, millis, notice, sats } from "./dom.js";

export function createPlayground(root) {
  const modelSelect = h("select", { id: "play-model", "aria-label": "Model or chain" });
  const prompt = h("textarea", {
    id: "play-prompt",
    rows: 4,
    placeholder: "Say something to the model…",
    "aria-label": "Prompt",
  });
  const send = h("button", { type: "submit", id: "play-send" }, "Send");
  const stop = h(
    "button",
    { type: "button", class: "secondary", id: "play-stop", hidden: true },
    "Stop",
  );
  const answer = h("pre", { id: "play-answer", class: "answer", "aria-live": "polite" });
  const meta = h("div", { id: "play-meta" });
  const form = h(
    "form",
    { class: "playground" },
    h("label", {}, "Model or chain ", modelSelect),
    prompt,
    h("div", { class: "actions" }, send, stop),
  );
  fill(root, h("div", { class: "toolbar" }, h("h2", {}, "Playground")), form, answer, meta);

  let loaded = false;
  let controller = null;

  async function refresh() {
    if (loaded) return;
    try {
      const models = await getJson("/v1/models");
      const plain = models.data.filter((m) => m.owned_by !== "arbstr-chain");
      const chains = models.data.filter((m) => m.owned_by === "arbstr-chain");
      const option = (m) => h("option", { value: m.id }, `${m.id} (${m.providers.join(", ")})`);
      fill(
        modelSelect,
        plain.length ? h("optgroup", { label: "Models" }, plain.map(option)) : null,
        chains.length ? h("optgroup", { label: "Chains" }, chains.map(option)) : null,
      );
      loaded = true;
    } catch (error) {
      fill(meta, notice("error", `Could not load models: ${error.message}`));
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!controller) run();
  });
  stop.addEventListener("click", () => controller?.abort());

  async function run() {
    controller = new AbortController();
    send.disabled = true;
    stop.hidden = false;
    answer.textContent = "";
    fill(meta, notice("loading", "Waiting for the first token…"));
    const body = {
      model: modelSelect.value,
      messages: [{ role: "user", content: prompt.value || "hello" }],
      stream: true,
    };
    let headers = null;
    try {
      const response = await request("/v1/chat/completions", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
        signal: controller.signal,
      });
      headers = response.headers;
      fill(meta, notice("loading", "Streaming…"));
      const metadata = await readStream(response, (text) => answer.append(text));
      await finish(headers, metadata);
    } catch (error) {
      const stopped = error.name === "AbortError";
      fill(
        meta,
        notice("error", stopped ? "Stopped." : `Request failed: ${error.message}`),
        headers ? facts(headers, {}) : null,
      );
    } finally {
      controller = null;
      send.disabled = false;
      stop.hidden = true;
    }
  }

  async function finish(headers, metadata) {
    const id = metadata.request_id ?? headers.get("x-arbstr-request-id");
    fill(meta, facts(headers, metadata));
    if (!id) return;
    // The log is written just after the stream ends: ask again briefly if not yet there.
    for (let tries = 0; tries < 5; tries++) {
      try {
        const logged = await getJson(`/v1/requests/${encodeURIComponent(id)}`);
        fill(meta, facts(headers, metadata, logged));
        return;
      } catch (error) {
        if (error.status !== 404) return;
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    }
  }

  return { refresh, pollMs: 0 };
}

/** What the user should know once the answer is in: who answered, how, and for how much. */
function facts(headers, metadata, logged = null) {
  const provider = metadata.provider ?? headers.get("x-arbstr-provider") ?? "–";
  const cost = metadata.cost_sats ?? logged?.cost_sats;
  const usageMissing = metadata.usage_missing || logged?.usage_missing;
  const retries = headers.get("x-arbstr-retries");
  const attempts = logged?.attempts;
  const item = (name, label, value) =>
    h("div", { class: "fact" }, h("dt", {}, label), h("dd", { "data-fact": name }, value));
  return h(
    "dl",
    { class: "facts" },
    item("provider", "Provider", provider),
    item("cost", "Cost (sats)", usageMissing ? "unknown (no usage reported)" : sats(cost)),
    item("latency", "Latency", millis(metadata.latency_ms ?? logged?.latency_ms)),
    item(
      "attempts",
      "Attempts",
      attempts
        ? attempts.map((a) => `${a.provider}: ${a.outcome}`).join(", ") || "none"
        : (headers.get("x-arbstr-attempts") ?? "1"),
    ),
    item("retries", "Retries", retries ?? "none"),
    item(
      "request_id",
      "Request id",
      headers.get("x-arbstr-request-id") ?? metadata.request_id ?? "–",
    ),
  );
}

/**
 * Read an SSE response to its end, calling `onText` with each content delta.
 * Returns the proxy's `arbstr` metadata (or {}); throws ApiError-like errors for an
 * error event, which is how the proxy ends a stream whose provider failed midway.
 */
export async function readStream(response, onText) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let metadata = {};
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) !== -1) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = event
        .split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).replace(/^ /, ""))
        .join("\n");
      if (!data) continue;
      if (data === "[DONE]") return metadata;
      const chunk = JSON.parse(data);
      if (chunk.error) {
        throw Object.assign(new Error(chunk.error.message ?? JSON.stringify(chunk.error)), {
          code: chunk.error.code,
        });
      }
      if (chunk.arbstr) metadata = chunk.arbstr;
      const text = chunk.choices?.[0]?.delta?.content;
      if (text) onText(text);
    }
  }
  throw new Error("the stream ended without [DONE]: the answer may be incomplete");
}
