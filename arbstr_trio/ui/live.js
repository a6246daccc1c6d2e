// The websocket feed at /v1/live: events pushed as they happen.
//
// Protocol: JSON text messages {"type", "ts", ...} of types hello, request,
// attempt_failed, breaker, cooldown_started, cooldown_ended and dropped. Browsers
// cannot set headers on a websocket, so when the user gave a key it is the first
// message, {"type": "auth", "key": ...}; close code 4401/4403 means the key is
// missing or wrong.
//
// The feed is an accelerator, not a dependency: the views also poll, so a proxy
// without /v1/live (it closes the handshake), or a network that drops websockets,
// only makes updates a few seconds slower. A failed connection is retried with a
// growing pause and reported once as a quiet status, never as an error per attempt.

import { getKey } from "./api.js";

const FIRST_RETRY_MS = 5_000;
const MAX_RETRY_MS = 60_000;

export class LiveFeed {
  constructor() {
    this.listeners = new Set();
    this.statusListeners = new Set();
    this.status = "connecting";
    this.socket = null;
    this.retryMs = FIRST_RETRY_MS;
    this.timer = null;
  }

  /** Call `listener(event)` for every event; returns a function that unsubscribes. */
  subscribe(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Call `listener(status)` with "connecting", "live", "unavailable" or "unauthorized". */
  onStatus(listener) {
    this.statusListeners.add(listener);
    listener(this.status);
  }

  get connected() {
    return this.status === "live";
  }

  start() {
    clearTimeout(this.timer);
    this.timer = null;
    if (this.socket) this.socket.close(1000);
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    let socket;
    try {
      socket = new WebSocket(`${scheme}//${location.host}/v1/live`);
    } catch {
      this.setStatus("unavailable");
      return;
    }
    this.socket = socket;
    this.setStatus("connecting");
    socket.addEventListener("open", () => {
      const key = getKey();
      if (key) socket.send(JSON.stringify({ type: "auth", key }));
    });
    socket.addEventListener("message", (message) => {
      let event;
      try {
        event = JSON.parse(message.data);
      } catch {
        return; // not ours to show; the feed only sends JSON
      }
      if (!event || typeof event.type !== "string") return;
      this.retryMs = FIRST_RETRY_MS;
      this.setStatus("live"); // the first event (normally "hello") proves the feed works
      for (const listener of this.listeners) listener(event);
    });
    socket.addEventListener("close", (closed) => {
      if (this.socket !== socket) return; // replaced by a newer connection
      this.socket = null;
      if (closed.code === 4401 || closed.code === 4403) {
        this.setStatus("unauthorized"); // retried when the user enters a key
        return;
      }
      this.setStatus("unavailable");
      this.timer = setTimeout(() => this.start(), this.retryMs);
      this.retryMs = Math.min(this.retryMs * 2, MAX_RETRY_MS);
    });
  }

  setStatus(status) {
    if (status === this.status) return;
    this.status = status;
    for (const listener of this.statusListeners) listener(status);
  }
}
