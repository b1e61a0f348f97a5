// An integration's live activity feed: the stream gateway's /feed websocket, newest first.
// The token goes in the first frame (not the URL, which ends up in logs; not a cookie).
import { h, clear, fmtClock, summarize } from "./dom.js";
import { session } from "./api.js";

const SHOWN_MAX = 200; // items on screen
const HELD_MAX = 1000; // items held while paused (older ones are dropped and counted)
const FINAL = new Set([4400, 4401, 4404]); // retrying would not help

export function liveFeed(integrationId, onOpenDelivery) {
  const list = h("ol", { class: "feed", id: "feed", "aria-live": "polite" });
  const state = h("span", { class: "feed-state", id: "feed-state" }, "connecting");
  const held = [];
  let dropped = 0;
  let paused = false;
  let ws = null;
  let stopped = false;
  let backoff = 1000;
  let timer = null;

  const pauseBtn = h("button", { type: "button", id: "feed-pause", onclick: () => toggle() },
    "Pause");

  function show(frame) {
    const a = frame.activity || {};
    const sender = a.sender ? (a.sender.name || a.sender.id) : "";
    const item = h("li", { class: "feed-item", dataset: { deliveryId: frame.deliveryId } },
      h("time", {}, fmtClock(a.timestamp || Date.now())),
      h("span", { class: "feed-type" }, a.type || ""),
      h("span", { class: "feed-sender" }, sender),
      h("span", { class: "feed-text" }, summarize(a)),
      h("button", { type: "button", class: "link", onclick: () => onOpenDelivery(frame.deliveryId) },
        "delivery"));
    list.prepend(item);
    while (list.children.length > SHOWN_MAX) list.lastElementChild.remove();
  }

  function toggle() {
    paused = !paused;
    pauseBtn.textContent = paused ? "Resume" : "Pause";
    if (!paused) {
      for (const f of held.splice(0)) show(f);
      if (dropped) list.prepend(h("li", { class: "feed-gap" }, `${dropped} older items not shown`));
      dropped = 0;
    }
    setState();
  }

  function setState(text) {
    const base = text || state.dataset.conn || "connecting";
    state.dataset.conn = base;
    state.textContent = paused ? `${base}, paused (${held.length} waiting)` : base;
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    ws = new WebSocket(`${scheme}://${location.host}/v1/integrations/${encodeURIComponent(integrationId)}/feed`);
    ws.onopen = () => ws.send(JSON.stringify({ type: "auth", token: session.token }));
    ws.onmessage = (ev) => {
      let frame;
      try { frame = JSON.parse(ev.data); } catch { return; }
      if (frame.type === "ready") { backoff = 1000; setState("live"); return; }
      if (frame.type !== "activity") return;
      if (paused) {
        held.push(frame);
        if (held.length > HELD_MAX) { held.shift(); dropped += 1; }
        setState();
      } else {
        show(frame);
      }
    };
    ws.onclose = (ev) => {
      if (stopped) return;
      if (FINAL.has(ev.code)) { setState(`closed (${ev.code} ${ev.reason})`); return; }
      setState(`reconnecting (${ev.code})`);
      timer = setTimeout(connect, ev.code === 4429 ? Math.max(backoff, 15000) : backoff);
      backoff = Math.min(backoff * 2, 30000);
    };
  }

  connect();
  return {
    node: h("section", { class: "card" },
      h("header", { class: "row" }, h("h3", {}, "Live activity"), state, pauseBtn,
        h("button", { type: "button", onclick: () => { clear(list); } }, "Clear")),
      list),
    stop() { stopped = true; clearTimeout(timer); if (ws) ws.close(1000); },
  };
}
