// What a fresh install shows instead of empty charts: how to send a first request.
//
// The snippets use this page's own origin as the base URL, so they are right for
// however the proxy is reached (another port, a reverse proxy), and the key variable
// only when the user had to give a key to see this page.

import { getKey } from "./api.js";
import { h } from "./dom.js";

export function firstRequest(model = "gpt-4o-mini") {
  const base = `${location.origin}/v1`;
  const keyed = Boolean(getKey());
  const body = JSON.stringify({ model, messages: [{ role: "user", content: "hello" }] });
  const curl = [
    `curl -s ${base}/chat/completions -H 'content-type: application/json' \\`,
    keyed ? `  -H "Authorization: Bearer $ARBSTR_KEY" \\` : null,
    `  -d '${body}' -i`,
  ]
    .filter(Boolean)
    .join("\n");
  const apiKey = keyed ? 'os.environ["ARBSTR_KEY"]' : '"unused"';
  const python = [
    "from openai import OpenAI",
    "",
    `client = OpenAI(base_url="${base}", api_key=${apiKey})`,
    "raw = client.chat.completions.with_raw_response.create(",
    `    model="${model}", messages=[{"role": "user", "content": "hello"}]`,
    ")",
    'print(raw.headers["x-arbstr-provider"], raw.headers["x-arbstr-cost-sats"])',
  ];
  if (keyed) python.unshift("import os");
  return h(
    "div",
    { class: "onboarding", "data-empty": "first-request" },
    h("h3", {}, "No requests yet"),
    h(
      "p",
      {},
      "The proxy has not logged a request. Point any OpenAI client at ",
      h("code", {}, base),
      " and send one; it shows up here within seconds. Or try the Playground tab.",
    ),
    h("h4", {}, "curl"),
    h("pre", { "data-snippet": "curl" }, curl),
    h("h4", {}, "Python (openai SDK)"),
    h("pre", { "data-snippet": "python" }, python.join("\n")),
  );
}
