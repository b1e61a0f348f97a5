// DOM helpers. Every value from the API goes in as a text node or a property, never as
// markup: activity texts, names and answers are attacker-controlled.

/** An element: props set as properties (on… as listeners), children as nodes or text. */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  setProps(el, props);
  append(el, children);
  return el;
}

/** An SVG element (the charts): attributes only, never a style attribute (CSP). */
export function svg(tag, attrs, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function setProps(el, props) {
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = String(v);
    else if (k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
}

export function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function fmtTime(ms) {
  if (ms === null || ms === undefined) return "";
  const d = new Date(ms);
  return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

export function fmtClock(ms) {
  return new Date(ms).toISOString().slice(11, 19);
}

/** A short readable line for an activity: its text, or what kind of thing it is. */
export function summarize(activity) {
  const m = activity && activity.message;
  if (m) {
    if (m.type === "text") return m.text;
    if (m.type === "image") return `[image] ${m.caption || m.url || ""}`;
    if (m.type === "file") return `[file] ${m.name || m.url || ""}`;
    if (m.type === "card") return `[card] ${m.title || ""}`;
    if (m.type === "carousel") return `[carousel] ${(m.cards || []).length} cards`;
    return `[${m.type}]`;
  }
  if (activity && activity.event) return `[${activity.type}] ${activity.event.name || ""}`;
  return `[${activity ? activity.type : "?"}]`;
}

/** A message line in a page's status area (errors in red, via a class). */
export function notice(text, kind = "info") {
  return h("p", { class: `notice notice-${kind}`, role: kind === "error" ? "alert" : "status" },
    text);
}
