// The dashboard's shell: tabs (the URL hash names the view), polling of the visible
// view, the live-feed status, and the key prompt.
//
// Each view module exports createX(root, context) -> {refresh, pollMs, enter?}:
// `enter` (else `refresh`) runs when its tab is opened, `refresh` every `pollMs`
// while it stays open (0: never). Only the visible view polls.

import { getKey, onAuthRequired, setKey } from "./api.js";
import { LiveFeed } from "./live.js";
import { createOverview } from "./overview.js";
import { createPlayground } from "./playground.js";
import { createProviders } from "./providers.js";
import { createRequests } from "./requests.js";

const FACTORIES = {
  overview: createOverview,
  providers: createProviders,
  requests: createRequests,
  playground: createPlayground,
};
const LIVE_LABELS = {
  connecting: "connecting…",
  live: "● live",
  unavailable: "live feed unavailable (polling)",
  unauthorized: "live feed: key needed (polling)",
};

const live = new LiveFeed();
const views = {};
for (const [name, create] of Object.entries(FACTORIES)) {
  const root = document.getElementById(`view-${name}`);
  views[name] = { root, view: create(root, { live }) };
}
let current = null;
let timer = null;

function show() {
  const name = location.hash.slice(1) in views ? location.hash.slice(1) : "overview";
  current = name;
  for (const [other, { root }] of Object.entries(views)) root.hidden = other !== name;
  for (const tab of document.querySelectorAll("[data-tab]")) {
    if (tab.dataset.tab === name) tab.setAttribute("aria-current", "page");
    else tab.removeAttribute("aria-current");
  }
  const { view } = views[name];
  (view.enter ?? view.refresh)();
  clearInterval(timer);
  if (view.pollMs) {
    timer = setInterval(() => {
      if (!document.hidden) view.refresh();
    }, view.pollMs);
  }
}

// The key prompt: opened by the first 401/403 from any call, or by the button.
const dialog = document.getElementById("key-dialog");
const reason = document.getElementById("key-reason");
const input = document.getElementById("key-input");

function askForKey(message) {
  reason.textContent = message;
  if (!dialog.open) {
    input.value = getKey();
    dialog.showModal();
  }
}

onAuthRequired((error) => askForKey(error.message));
document
  .getElementById("change-key")
  .addEventListener("click", () =>
    askForKey("Enter the client key this proxy was configured with ([[keys]])."),
  );
document.getElementById("key-cancel").addEventListener("click", () => dialog.close());
document.getElementById("key-form").addEventListener("submit", () => {
  setKey(input.value.trim());
  // The form's method="dialog" closes it; then everything is asked again with the key.
  live.start();
  show();
});

const liveStatus = document.getElementById("live-status");
live.onStatus((status) => {
  liveStatus.textContent = LIVE_LABELS[status] ?? status;
  liveStatus.dataset.live = status;
});

window.addEventListener("hashchange", show);
live.start();
show();
