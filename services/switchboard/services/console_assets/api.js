// The console's only way to act: the public API, with the token in the Authorization
// header. The token lives in this tab's sessionStorage (gone when the tab closes), never
// in a cookie, so another site cannot make the browser use it.

const KEY = "switchboard.console.token";
const ACCESS_TOKEN = /^sbat_/;
let onUnauthorized = () => {};

export const session = {
  get token() { return sessionStorage.getItem(KEY); },
  set(token) { sessionStorage.setItem(KEY, token); },
  clear() { sessionStorage.removeItem(KEY); },
  /** The operator's token (hub access tokens have their own shape). */
  get isAdmin() { const t = this.token; return Boolean(t) && !ACCESS_TOKEN.test(t); },
  onUnauthorized(fn) { onUnauthorized = fn; },
};

export class ApiError extends Error {
  constructor(status, body) {
    const e = body && Array.isArray(body.errors) ? body.errors[0] : null;
    super(e ? `${e.description} (${e.code}${e.field ? `, ${e.field}` : ""})` : `HTTP ${status}`);
    this.status = status;
    this.code = e ? e.code : null;
    this.field = e ? e.field : null;
  }
}

/** One API call; resolves to the decoded JSON (null for 204), rejects with ApiError. */
export async function api(method, path, body, token = session.token) {
  const headers = { Authorization: `Bearer ${token || ""}` };
  const init = { method, headers, cache: "no-store", credentials: "omit", redirect: "error" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const r = await fetch(path, init);
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (r.status === 401 && token === session.token) onUnauthorized();
  if (!r.ok) throw new ApiError(r.status, data);
  return data;
}

export const enc = encodeURIComponent;
