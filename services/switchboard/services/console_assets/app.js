// The console: a static client of /api/v1. Hash routes, so the server serves one page.
import { h, clear, notice } from "./dom.js";
import { api, session, ApiError } from "./api.js";
import { hubsView, hubView } from "./views_hub.js";
import { integrationView, deliveryView } from "./views_integration.js";

const ROUTES = [
  [/^#\/hubs$/, hubsView],
  [/^#\/hubs\/([^/]+)$/, hubView],
  [/^#\/integrations\/([^/]+)$/, integrationView],
  [/^#\/deliveries\/([^/]+)$/, deliveryView],
];

const main = document.getElementById("main");
const who = document.getElementById("who");
let cleanup = null;
let generation = 0;

function loginView() {
  const input = h("input", { type: "password", id: "token", name: "token", autocomplete: "off",
    required: true, placeholder: "sbat_… (a hub's access token) or the admin token" });
  const status = h("div", {});
  const form = h("form", { id: "login", class: "card narrow", onsubmit: async (ev) => {
    ev.preventDefault();
    clear(status);
    const token = input.value.trim();
    try {
      await api("GET", "/api/v1/hubs", undefined, token);
    } catch (e) {
      status.append(notice(e instanceof ApiError && e.status === 401
        ? "That token is not valid here." : `Could not sign in: ${e.message}`, "error"));
      return;
    }
    session.set(token);
    location.hash = "#/hubs";
    render();
  } },
  h("h2", {}, "Sign in"),
  h("p", {}, "Use a hub's access token to see that hub, or the operator's admin token to see " +
    "every hub. The token stays in this tab only and is sent in the Authorization header."),
  h("label", { for: "token" }, h("span", {}, "Token"), input),
  h("button", { type: "submit" }, "Sign in"), status);
  return form;
}

function header() {
  clear(who);
  if (!session.token) return;
  who.append(
    h("span", { id: "role" }, session.isAdmin ? "operator (every hub)" : "hub owner"),
    h("button", { type: "button", id: "logout", onclick: () => {
      session.clear();
      location.hash = "";
      render();
    } }, "Sign out"));
}

export async function render() {
  const mine = ++generation;
  if (cleanup) { try { cleanup(); } catch { /* a view's own teardown */ } cleanup = null; }
  header();
  clear(main);
  if (!session.token) { main.append(loginView()); return; }
  const hash = location.hash || "#/hubs";
  // Each render draws into a box of its own: one overtaken by a newer render (a hash
  // change while it waited for the API) keeps drawing into a detached box, unseen.
  const box = h("div", { class: "view" });
  main.append(box);
  for (const [re, view] of ROUTES) {
    const m = hash.match(re);
    if (!m) continue;
    try {
      const params = m.slice(1).map(decodeURIComponent);
      const done = await view(box, ...params);
      if (mine === generation) cleanup = done || null;
      else if (done) done();
    } catch (e) {
      if (mine === generation) box.append(notice(e.message, "error"));
    }
    return;
  }
  location.hash = "#/hubs";
}

session.onUnauthorized(() => {
  session.clear();
  render().then(() => main.prepend(notice("Signed out: the token is no longer valid.", "error")));
});
window.addEventListener("hashchange", render);
render();
