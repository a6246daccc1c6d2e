// Small helpers every view shares: building elements and formatting numbers.
//
// Elements are built with textContent, never innerHTML: model names, error messages
// and provider names come from the request log and upstream answers, and must be
// shown as text, not parsed as markup.

/** h("td", {class: "num"}, "12", child) -> an element; null/false children are skipped. */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2), value);
    } else if (value === true) {
      element.setAttribute(name, "");
    } else {
      element.setAttribute(name, String(value));
    }
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
}

/** Replace an element's children. */
export function fill(element, ...children) {
  element.replaceChildren();
  append(element, children);
  return element;
}

/** A message box: "loading", "empty" or "error" (the error's own message). */
export function notice(kind, text) {
  const role = kind === "error" ? "alert" : "status";
  return h("div", { class: `notice notice-${kind}`, role, "data-notice": kind }, text);
}

/** Sats with three decimals, as the proxy reports them ("-" when unknown). */
export function sats(value) {
  return typeof value === "number" ? value.toFixed(3) : "–";
}

export function millis(value) {
  return typeof value === "number" ? `${value} ms` : "–";
}

export function percent(part, whole) {
  return whole ? `${((100 * part) / whole).toFixed(1)}%` : "–";
}

export function count(value) {
  return typeof value === "number" ? String(value) : "–";
}

/** "14:03:07" today, "Nov 24 14:03" otherwise, in the viewer's local time. */
export function clock(iso) {
  const moment = new Date(iso);
  if (Number.isNaN(moment.getTime())) return String(iso);
  const sameDay = moment.toDateString() === new Date().toDateString();
  return sameDay
    ? moment.toLocaleTimeString([], { hour12: false })
    : moment.toLocaleString([], {
        month: "short",
        day: "numeric",
        hour: "2-digit",
        minute: "2-digit",
        hour12: false,
      });
}

/** Seconds as "42 s" or "3 min 5 s". */
export function duration(seconds) {
  const whole = Math.max(0, Math.round(seconds));
  if (whole < 60) return `${whole} s`;
  return `${Math.floor(whole / 60)} min ${whole % 60} s`;
}
