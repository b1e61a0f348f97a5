/*
 * Switchboard web chat widget. Plain JavaScript, no dependencies, no build step.
 *
 * Embed:  <script src="https://HUB/webchat/INTEGRATION_ID/widget.js" async></script>
 * Options (data- attributes on that script tag):
 *   data-mode="bubble" (default: a launcher button, bottom right) or "inline"
 *   data-target="#css-selector"   where to mount in inline mode (default: after the script)
 *   data-title="Chat with us"     header text
 *   data-visitor-name="Ada"       a display name shown to agents (unverified)
 *
 * The hub and the integration are read from this script's own URL. The session token is
 * kept in localStorage ("switchboard.webchat.<id>"), so a reload resumes the conversation;
 * the frame protocol is described in the hub's README (WebChat).
 */
(function () {
  "use strict";

  var script = document.currentScript;
  if (!script || !script.src) return;
  var src = new URL(script.src, document.baseURI);
  var match = src.pathname.match(/^(.*)\/webchat\/([^/]+)\/widget\.js$/);
  if (!match) return;
  var prefix = match[1];
  var integrationId = decodeURIComponent(match[2]);
  var wsUrl = (src.protocol === "https:" ? "wss://" : "ws://") + src.host + prefix +
    "/webchat/" + encodeURIComponent(integrationId) + "/ws";
  var data = script.dataset || {};
  var opts = {
    mode: data.mode === "inline" ? "inline" : "bubble",
    target: data.target || null,
    title: data.title || "Chat",
    visitorName: data.visitorName || null
  };
  var storeKey = "switchboard.webchat." + integrationId;

  // ---- persistent state: the session token and messages not yet acknowledged ----------

  function load() {
    try {
      var s = JSON.parse(window.localStorage.getItem(storeKey) || "{}");
      return { session: s.session || null, outbox: Array.isArray(s.outbox) ? s.outbox : [] };
    } catch (e) {
      return { session: null, outbox: [] };
    }
  }
  var state = load();
  function save() {
    try { window.localStorage.setItem(storeKey, JSON.stringify(state)); } catch (e) { /* private mode */ }
  }

  // ---- DOM ---------------------------------------------------------------------------

  var CSS = [
    ":host{all:initial}",
    "*{box-sizing:border-box}",
    ".sb-panel{font:14px/1.4 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1f2328;",
    " background:#fff;display:flex;flex-direction:column;border:1px solid #d0d7de;border-radius:12px;",
    " overflow:hidden;box-shadow:0 8px 24px rgba(140,149,159,.25)}",
    ".sb-inline{width:100%;height:100%;min-height:360px}",
    ".sb-floating{position:fixed;right:20px;bottom:88px;width:360px;max-width:calc(100vw - 40px);",
    " height:520px;max-height:calc(100vh - 120px);z-index:2147483000}",
    ".sb-hidden{display:none}",
    ".sb-header{display:flex;align-items:center;gap:8px;padding:12px 14px;background:#0b5cad;color:#fff}",
    ".sb-title{flex:1;font-weight:600;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}",
    ".sb-status{font-size:12px;opacity:.85}",
    ".sb-close{all:unset;cursor:pointer;font-size:20px;line-height:1;padding:0 4px}",
    ".sb-log{flex:1;overflow-y:auto;padding:12px;display:flex;flex-direction:column;gap:8px;",
    " background:#f6f8fa}",
    ".sb-empty{color:#656d76;text-align:center;margin:auto;font-size:13px}",
    ".sb-msg{max-width:80%;display:flex;flex-direction:column;gap:2px}",
    ".sb-visitor{align-self:flex-end;align-items:flex-end}",
    ".sb-agent,.sb-bot{align-self:flex-start;align-items:flex-start}",
    ".sb-name{font-size:11px;color:#656d76;padding:0 6px}",
    ".sb-body{padding:8px 12px;border-radius:14px;white-space:pre-wrap;word-wrap:break-word;",
    " overflow-wrap:anywhere}",
    ".sb-visitor .sb-body{background:#0b5cad;color:#fff;border-bottom-right-radius:4px}",
    ".sb-agent .sb-body,.sb-bot .sb-body{background:#fff;border:1px solid #d0d7de;",
    " border-bottom-left-radius:4px}",
    ".sb-bot .sb-body{background:#eef6ff}",
    ".sb-msg .sb-rich{padding:0;border:0;background:transparent}",
    ".sb-meta{font-size:11px;color:#656d76;padding:0 6px}",
    ".sb-failed .sb-meta{color:#cf222e}",
    ".sb-pending .sb-body{opacity:.7}",
    ".sb-body img{display:block;max-width:100%;border-radius:8px;margin-top:4px}",
    ".sb-body a{color:inherit}",
    ".sb-card{border:1px solid #d0d7de;border-radius:10px;background:#fff;overflow:hidden;",
    " min-width:200px;max-width:240px;color:#1f2328}",
    ".sb-card img{margin:0;border-radius:0}",
    ".sb-card-text{padding:8px 10px}",
    ".sb-card-title{font-weight:600}",
    ".sb-card-sub{color:#656d76;font-size:13px}",
    ".sb-carousel{display:flex;gap:8px;overflow-x:auto;max-width:100%}",
    ".sb-buttons{display:flex;flex-wrap:wrap;gap:6px;padding:6px 0 0}",
    ".sb-card .sb-buttons{padding:0 10px 10px}",
    ".sb-btn{all:unset;cursor:pointer;border:1px solid #0b5cad;color:#0b5cad;border-radius:14px;",
    " padding:3px 10px;font-size:13px;background:#fff}",
    ".sb-btn:hover{background:#eef6ff}",
    ".sb-form{display:flex;gap:8px;padding:10px;border-top:1px solid #d0d7de;background:#fff}",
    ".sb-input{flex:1;font:inherit;padding:8px 10px;border:1px solid #d0d7de;border-radius:8px;",
    " resize:none;min-height:38px;max-height:120px}",
    ".sb-input:focus{outline:2px solid #0b5cad;outline-offset:-1px}",
    ".sb-send{font:inherit;font-weight:600;padding:0 14px;border:0;border-radius:8px;",
    " background:#0b5cad;color:#fff;cursor:pointer}",
    ".sb-send:disabled{opacity:.5;cursor:default}",
    ".sb-launcher{all:unset;position:fixed;right:20px;bottom:20px;width:56px;height:56px;",
    " border-radius:50%;background:#0b5cad;color:#fff;display:flex;align-items:center;",
    " justify-content:center;font:600 13px system-ui,sans-serif;cursor:pointer;",
    " box-shadow:0 4px 12px rgba(0,0,0,.25);z-index:2147483000}"
  ].join("\n");

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  var host = el("div");
  host.setAttribute("data-switchboard-webchat", integrationId);
  var root = host.attachShadow ? host.attachShadow({ mode: "open" }) : host;
  var style = el("style");
  style.textContent = CSS;
  root.appendChild(style);

  var panel = el("div", "sb-panel " + (opts.mode === "inline" ? "sb-inline" : "sb-floating sb-hidden"));
  panel.setAttribute("data-state", "connecting");
  panel.setAttribute("role", "region");
  panel.setAttribute("aria-label", opts.title);
  var header = el("div", "sb-header");
  var titleEl = el("span", "sb-title", opts.title);
  var statusEl = el("span", "sb-status", "connecting…");
  header.appendChild(titleEl);
  header.appendChild(statusEl);
  var log = el("div", "sb-log");
  log.setAttribute("role", "log");
  log.setAttribute("aria-live", "polite");
  var empty = el("div", "sb-empty", "Send a message to start the conversation.");
  log.appendChild(empty);
  var form = el("form", "sb-form");
  var input = el("textarea", "sb-input");
  input.rows = 1;
  input.placeholder = "Type a message…";
  input.setAttribute("aria-label", "Message");
  input.maxLength = 4096;
  var sendBtn = el("button", "sb-send", "Send");
  sendBtn.type = "submit";
  form.appendChild(input);
  form.appendChild(sendBtn);
  panel.appendChild(header);
  panel.appendChild(log);
  panel.appendChild(form);
  root.appendChild(panel);

  if (opts.mode === "bubble") {
    var closeBtn = el("button", "sb-close", "×");
    closeBtn.type = "button";
    closeBtn.setAttribute("aria-label", "Close chat");
    header.appendChild(closeBtn);
    var launcher = el("button", "sb-launcher", "Chat");
    launcher.type = "button";
    launcher.setAttribute("aria-label", "Open chat");
    root.appendChild(launcher);
    var toggle = function () {
      panel.classList.toggle("sb-hidden");
      if (!panel.classList.contains("sb-hidden")) input.focus();
    };
    launcher.addEventListener("click", toggle);
    closeBtn.addEventListener("click", toggle);
  }

  function mount() {
    var target = opts.target ? document.querySelector(opts.target) : null;
    if (target) target.appendChild(host);
    else if (opts.mode === "inline" && script.parentNode) script.parentNode.insertBefore(host, script.nextSibling);
    else document.body.appendChild(host);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", mount);
  else mount();

  // ---- rendering -----------------------------------------------------------------------

  var byActivity = new Map(); // activityId -> element: the dedupe of the stream
  var byClientId = new Map(); // client message id -> element (our own messages)

  function timeOf(ms) {
    try {
      return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    } catch (e) {
      return "";
    }
  }

  function safeUrl(u) {
    return typeof u === "string" && /^https?:\/\//i.test(u) ? u : null;
  }

  function buttonsOf(buttons) {
    var box = el("div", "sb-buttons");
    (buttons || []).forEach(function (b) {
      if (b.type === "url" && safeUrl(b.url)) {
        var a = el("a", "sb-btn", b.title);
        a.href = b.url;
        a.target = "_blank";
        a.rel = "noopener noreferrer";
        box.appendChild(a);
      } else {
        var btn = el("button", "sb-btn", b.title);
        btn.type = "button";
        btn.addEventListener("click", function () { send(b.title, b.payload || b.title); });
        box.appendChild(btn);
      }
    });
    return box;
  }

  function cardOf(c) {
    var card = el("div", "sb-card");
    if (safeUrl(c.imageUrl)) {
      var img = el("img");
      img.src = c.imageUrl;
      img.alt = c.title || "";
      card.appendChild(img);
    }
    var text = el("div", "sb-card-text");
    text.appendChild(el("div", "sb-card-title", c.title));
    if (c.subtitle) text.appendChild(el("div", "sb-card-sub", c.subtitle));
    card.appendChild(text);
    if (c.buttons && c.buttons.length) card.appendChild(buttonsOf(c.buttons));
    return card;
  }

  function bodyOf(m) {
    var body = el("div", "sb-body");
    switch (m && m.type) {
      case "text":
        body.textContent = m.text;
        break;
      case "image":
        if (safeUrl(m.url)) {
          var img = el("img");
          img.src = m.url;
          img.alt = m.caption || "image";
          body.appendChild(img);
        }
        if (m.caption) body.appendChild(el("div", null, m.caption));
        break;
      case "file":
        if (safeUrl(m.url)) {
          var a = el("a", null, m.name || "Download file");
          a.href = m.url;
          a.target = "_blank";
          a.rel = "noopener noreferrer";
          body.appendChild(a);
        }
        break;
      case "card":
        body.classList.add("sb-rich");
        body.appendChild(cardOf(m));
        break;
      case "carousel":
        var row = el("div", "sb-carousel");
        (m.cards || []).forEach(function (c) { row.appendChild(cardOf(c)); });
        body.classList.add("sb-rich");
        body.appendChild(row);
        break;
      default:
        body.textContent = "(unsupported message)";
    }
    return body;
  }

  function bubble(role, message, name) {
    var wrap = el("div", "sb-msg sb-" + role);
    if (name && role !== "visitor") wrap.appendChild(el("div", "sb-name", name));
    wrap.appendChild(bodyOf(message));
    if (message && message.type === "text" && message.quickReplies && message.quickReplies.length) {
      wrap.appendChild(buttonsOf(message.quickReplies.map(function (q) {
        return { title: q.title, payload: q.payload, type: "postback" };
      })));
    }
    var meta = el("div", "sb-meta");
    wrap.appendChild(meta);
    return wrap;
  }

  function append(node) {
    if (empty.parentNode) empty.parentNode.removeChild(empty);
    var atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    log.appendChild(node); // appending an existing node moves it: stream order wins
    if (atBottom || node.classList.contains("sb-visitor")) log.scrollTop = log.scrollHeight;
  }

  function setMeta(node, text, cls) {
    node.classList.remove("sb-pending", "sb-failed");
    if (cls) node.classList.add(cls);
    node.querySelector(".sb-meta").textContent = text;
  }

  function render(a) {
    // Our own message may already be on screen (sent from this page, maybe acked).
    var node = byActivity.get(a.activityId) ||
      (a.clientMessageId ? byClientId.get(a.clientMessageId) : null);
    if (node && node.hasAttribute("data-streamed")) return; // a duplicate: shown once
    if (!node) node = bubble(a.role, a.message, a.senderName);
    node.setAttribute("data-activity-id", a.activityId);
    node.setAttribute("data-streamed", "");
    byActivity.set(a.activityId, node);
    if (a.clientMessageId) byClientId.set(a.clientMessageId, node);
    setMeta(node, timeOf(a.timestamp));
    append(node);
  }

  function clearLog() {
    byActivity.clear();
    byClientId.clear();
    while (log.firstChild) log.removeChild(log.firstChild);
    log.appendChild(empty);
  }

  // ---- the socket ------------------------------------------------------------------

  var ws = null;
  var ready = false;
  var cursor = null; // last stream position seen; sent on reconnect, kept for this page only
  var conversationId = null;
  var backoff = 1000;
  var stopped = false;
  var retryTimer = null;

  function setStatus(s, text) {
    panel.setAttribute("data-state", s);
    statusEl.textContent = text;
  }

  function newId() {
    var b = new Uint8Array(12);
    window.crypto.getRandomValues(b);
    return Array.prototype.map.call(b, function (x) { return ("0" + x.toString(16)).slice(-2); }).join("");
  }

  function transmit(item) {
    if (ws && ready && ws.readyState === 1) {
      var frame = { type: "message", id: item.id, text: item.text };
      if (item.payload) frame.payload = item.payload;
      ws.send(JSON.stringify(frame));
    }
  }

  function pendingBubble(item) {
    var node = byClientId.get(item.id);
    if (!node) {
      node = bubble("visitor", { type: "text", text: item.text });
      node.setAttribute("data-client-id", item.id);
      byClientId.set(item.id, node);
      append(node);
    }
    setMeta(node, "sending…", "sb-pending");
  }

  function send(text, payload) {
    text = (text || "").trim();
    if (!text) return;
    var item = { id: newId(), text: text.slice(0, 4096) };
    if (payload) item.payload = String(payload).slice(0, 1000);
    state.outbox.push(item);
    save();
    pendingBubble(item);
    transmit(item);
  }

  function flush() {
    // A message whose echo is already on screen was accepted (only its ack was lost).
    state.outbox = state.outbox.filter(function (item) {
      var node = byClientId.get(item.id);
      return !(node && node.hasAttribute("data-streamed"));
    });
    save();
    state.outbox.forEach(function (item) { pendingBubble(item); transmit(item); });
  }

  function scheduleFlush() {
    if (retryTimer) return;
    retryTimer = setTimeout(function () { retryTimer = null; flush(); }, 5000);
  }

  function onFrame(f) {
    switch (f.type) {
      case "session":
        if (conversationId && f.conversationId !== conversationId) clearLog();
        conversationId = f.conversationId;
        state.session = f.session;
        save();
        panel.setAttribute("data-conversation-id", f.conversationId);
        break;
      case "delivery":
        cursor = f.cursor;
        render(f.activity);
        break;
      case "ready":
        if (f.cursor) cursor = f.cursor;
        ready = true;
        backoff = 1000;
        setStatus("ready", "online");
        flush();
        break;
      case "ack":
        state.outbox = state.outbox.filter(function (i) { return i.id !== f.id; });
        save();
        var node = byClientId.get(f.id);
        if (node && !node.hasAttribute("data-activity-id")) {
          node.setAttribute("data-activity-id", f.activityId);
          byActivity.set(f.activityId, node);
          setMeta(node, "sent");
        }
        break;
      case "error":
        var failed = f.id ? byClientId.get(f.id) : null;
        if (f.code === "unavailable" || f.code === "rate_limited") {
          if (failed) setMeta(failed, "not sent yet, retrying…", "sb-failed");
          scheduleFlush();
        } else {
          state.outbox = state.outbox.filter(function (i) { return i.id !== f.id; });
          save();
          if (failed) setMeta(failed, "not sent: " + f.description, "sb-failed");
        }
        break;
      default: // ping and anything newer
        break;
    }
  }

  function connect() {
    if (stopped) return;
    ready = false;
    setStatus("connecting", "connecting…");
    var sock = new WebSocket(wsUrl);
    ws = sock;
    sock.onopen = function () {
      var hello = { type: "hello" };
      if (state.session) hello.session = state.session;
      if (cursor) hello.cursor = cursor;
      if (opts.visitorName) hello.name = opts.visitorName;
      sock.send(JSON.stringify(hello));
    };
    sock.onmessage = function (ev) {
      var f;
      try { f = JSON.parse(ev.data); } catch (e) { return; }
      if (f && typeof f.type === "string") onFrame(f);
    };
    sock.onclose = function (ev) {
      if (ws !== sock) return;
      ws = null;
      ready = false;
      var code = ev.code;
      if (code === 4401) {
        // The token is not valid here (tampered, another deployment): start over.
        state.session = null;
        save();
        cursor = null;
        conversationId = null;
        clearLog();
        setTimeout(connect, 0);
        return;
      }
      if (code === 4403 || code === 4404) {
        stopped = true;
        setStatus("refused", code === 4403 ? "not allowed on this site" : "chat not found");
        sendBtn.disabled = true;
        return;
      }
      // 4409 paused; 4429 too many sockets or new visitors from this address: wait longer.
      var wait = code === 4409 ? 30000 : code === 4429 ? Math.max(backoff, 15000) : backoff;
      backoff = Math.min(backoff * 2, 30000);
      setStatus("offline", code === 4409 || code === 4429 ? "unavailable" : "reconnecting…");
      setTimeout(connect, wait + Math.floor(Math.random() * 500));
    };
  }

  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    send(input.value);
    input.value = "";
    input.focus();
  });
  input.addEventListener("keydown", function (ev) {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      send(input.value);
      input.value = "";
    }
  });

  connect();
})();
