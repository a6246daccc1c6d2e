// The proxy's HTTP API as the dashboard uses it: the client key, JSON, and errors.
//
// The key lives in sessionStorage only (gone when the tab closes, never written to
// localStorage) and goes out as `Authorization: Bearer`, as any OpenAI client sends
// it. Every failure becomes an ApiError whose message is the proxy's own words from
// its envelope {"error": {"message", "type", "code"}}, so a view can always print
// `error.message` and never shows "[object Object]".

const KEY_STORAGE = "arbstr.key";

/** A failed call: HTTP status, the envelope's code and type, a readable message. */
export class ApiError extends Error {
  constructor(message, { status = 0, code = null, type = null } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.type = type;
  }

  /** 401 or 403: the proxy wants a (different) client key. */
  get isAuth() {
    return this.status === 401 || this.status === 403;
  }
}

export function getKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

export function setKey(key) {
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
}

// Views do not each handle 401/403: the app registers one listener that shows the
// key prompt, and views just render the error they got.
const authListeners = new Set();

export function onAuthRequired(listener) {
  authListeners.add(listener);
}

function authRequired(error) {
  for (const listener of authListeners) listener(error);
}

/** Headers for a call to the proxy: the key, if the user gave one. */
export function authHeaders(extra = {}) {
  const key = getKey();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : { ...extra };
}

/**
 * The ApiError for a non-2xx response, read from its body. Anything that is not the
 * proxy's envelope (an HTML page from something in between, an empty body) still
 * gives a sentence with the status in it.
 */
export async function errorFrom(response) {
  const text = await response.text().catch(() => "");
  let message = `${response.status} ${response.statusText || "error"}`.trim();
  let code = null;
  let type = null;
  try {
    const body = JSON.parse(text);
    const error = body && typeof body === "object" ? body.error : null;
    if (error && typeof error === "object") {
      if (typeof error.message === "string" && error.message) message = error.message;
      code = typeof error.code === "string" ? error.code : null;
      type = typeof error.type === "string" ? error.type : null;
    } else if (typeof error === "string") {
      message = error;
    }
  } catch {
    if (text && text.length < 300) message = `${message}: ${text}`;
  }
  const apiError = new ApiError(message, { status: response.status, code, type });
  if (apiError.isAuth) authRequired(apiError);
  return apiError;
}

/** A request to the proxy with the key; throws ApiError unless the answer is 2xx. */
export async function request(path, init = {}) {
  let response;
  try {
    response = await fetch(path, { ...init, headers: authHeaders(init.headers) });
  } catch (cause) {
    throw new ApiError(`cannot reach the proxy (${cause.message || cause})`);
  }
  if (!response.ok) throw await errorFrom(response);
  return response;
}

/** GET a JSON document. `params` values that are empty or null are left out. */
export async function getJson(path, params = {}) {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "") query.set(name, String(value));
  }
  const url = query.size ? `${path}?${query}` : path;
  const response = await request(url, { headers: { Accept: "application/json" } });
  return response.json();
}

/**
 * GET /health, which answers 503 with its full document when no provider can be tried:
 * that is data for the providers view, not an error.
 */
export async function getHealth() {
  let response;
  try {
    response = await fetch("/health", { headers: authHeaders({ Accept: "application/json" }) });
  } catch (cause) {
    throw new ApiError(`cannot reach the proxy (${cause.message || cause})`);
  }
  if (response.ok || response.status === 503) {
    const body = await response.json().catch(() => null);
    if (body && Array.isArray(body.providers)) return body;
  }
  throw await errorFrom(response);
}
