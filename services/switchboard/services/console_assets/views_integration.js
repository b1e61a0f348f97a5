// One integration (its configuration, live feed, deliveries and replay) and one delivery.
import { h, clear, fmtTime } from "./dom.js";
import { api, enc } from "./api.js";
import { liveFeed } from "./feed.js";
import { attempt, table, trackJob } from "./common.js";

const STATUSES = ["", "delivered", "pending", "failed"];
const HOUR_MS = 3600 * 1000;

function configList(config) {
  // Shown as the API gives it: secrets arrive masked (********).
  return h("dl", { class: "config", id: "configuration" }, Object.entries(config || {}).map(([k, v]) =>
    [h("dt", {}, k), h("dd", {}, h("code", {}, typeof v === "string" ? v : JSON.stringify(v)))]));
}

function localInput(ms) {
  // datetime-local wants local wall time without a zone.
  const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60000);
  return d.toISOString().slice(0, 16);
}

export async function integrationView(main, integrationId) {
  const i = await api("GET", `/api/v1/integrations/${enc(integrationId)}`);
  const hub = await api("GET", `/api/v1/hubs/${enc(i.hubId)}`);
  const feed = liveFeed(integrationId, (id) => { location.hash = `#/deliveries/${enc(id)}`; });
  main.append(
    h("nav", { class: "crumbs" }, h("a", { href: "#/hubs" }, "Hubs"), " / ",
      h("a", { href: `#/hubs/${enc(i.hubId)}` }, hub.name), " / ", i.name),
    h("h2", {}, i.name, " ", h("span", { class: "muted" }, `${i.channelId} · ${i.integrationTypeId} · `,
      i.statusId === 3002 ? "Paused" : "Active")),
    h("details", { class: "card" }, h("summary", {}, "Configuration"), configList(i.configuration)),
    feed.node, deliveriesCard(integrationId), replayCard(integrationId));
  return () => feed.stop();
}

function deliveriesCard(integrationId) {
  const filter = h("select", { id: "status-filter" },
    STATUSES.map((s) => h("option", { value: s }, s || "all")));
  const body = h("tbody", {});
  const more = h("button", { type: "button", id: "more", hidden: true }, "More");
  const jobs = h("div", {});
  let cursor = null;
  const row = (d) => h("tr", { dataset: { deliveryId: d.deliveryId, status: d.status } },
    h("td", {}, fmtTime(d.updatedAt)), h("td", { class: `st-${d.status}` }, d.status),
    h("td", {}, String(d.attempts)), h("td", {}, d.lastStatus ?? ""), h("td", {}, d.lastError ?? ""),
    h("td", {}, h("a", { href: `#/deliveries/${enc(d.deliveryId)}` }, h("code", {}, d.deliveryId))));
  const load = (append) => attempt(jobs, async () => {
    const q = new URLSearchParams({ limit: "50" });
    if (filter.value) q.set("status", filter.value);
    if (append && cursor) q.set("cursor", cursor);
    const page = await api("GET", `/api/v1/integrations/${enc(integrationId)}/deliveries?${q}`);
    if (!append) clear(body);
    body.append(...page.items.map(row));
    cursor = page.nextCursor;
    more.hidden = !cursor;
  });
  filter.addEventListener("change", () => load(false));
  more.addEventListener("click", () => load(true));
  load(false);
  return h("section", { class: "card", id: "deliveries-card" },
    h("header", { class: "row" }, h("h3", {}, "Deliveries"),
      h("label", { for: "status-filter", class: "inline" }, "Status ", filter),
      h("button", { type: "button", id: "deliveries-refresh", onclick: () => load(false) }, "Refresh"),
      h("button", { type: "button", id: "redeliver-failed", onclick: () => attempt(jobs, async () => {
        const { jobId } = await api("POST", `/api/v1/integrations/${enc(integrationId)}/redeliver`,
          { status: "failed", since: 0 });
        trackJob(jobId, jobs, () => load(false));
      }) }, "Redeliver all failed")),
    jobs, h("table", { id: "deliveries" }, h("thead", {}, h("tr", {},
      ["Updated", "Status", "Attempts", "Last status", "Error", "Delivery"].map((t) => h("th", {}, t)))),
    body), more);
}

function replayCard(integrationId) {
  const now = Date.now();
  const since = h("input", { type: "datetime-local", id: "replay-since", value: localInput(now - HOUR_MS) });
  const until = h("input", { type: "datetime-local", id: "replay-until", value: localInput(now + 60000) });
  const jobs = h("div", {});
  return h("form", { class: "card", id: "replay", onsubmit: (ev) => {
    ev.preventDefault();
    attempt(jobs, async () => {
      const body = { since: new Date(since.value).getTime() };
      if (until.value) body.until = new Date(until.value).getTime() + 59999;
      const { jobId } = await api("POST", `/api/v1/integrations/${enc(integrationId)}/replay`, body);
      trackJob(jobId, jobs);
    });
  } }, h("h3", {}, "Replay a time window"),
  h("p", { class: "muted" }, "Sends again every delivery to this integration made in the window, " +
    "whatever became of it, in the original order, with the same webhook-id."),
  h("label", { for: "replay-since" }, h("span", {}, "From"), since),
  h("label", { for: "replay-until" }, h("span", {}, "Until"), until),
  h("button", { type: "submit" }, "Replay"), jobs);
}

export async function deliveryView(main, deliveryId) {
  const box = h("div", {});
  const jobs = h("div", {});
  const errs = h("div", {});
  main.append(box);
  const load = async () => {
    const d = await api("GET", `/api/v1/deliveries/${enc(deliveryId)}`);
    const i = await api("GET", `/api/v1/integrations/${enc(d.integrationId)}`);
    const rows = d.attempts.map((a) => h("tr", { class: "attempt", dataset: { attempt: a.attempt } },
      h("td", {}, String(a.attempt)), h("td", {}, fmtTime(a.at)), h("td", { class: "http" }, a.status ?? ""),
      h("td", {}, a.error ?? ""), h("td", {}, a.latencyMs === null ? "" : `${a.latencyMs} ms`),
      h("td", {}, a.response ? h("details", {}, h("summary", {}, h("code", {}, a.response.slice(0, 80))),
        h("pre", {}, a.response)) : "")));
    clear(box).append(
      h("nav", { class: "crumbs" }, h("a", { href: "#/hubs" }, "Hubs"), " / ",
        h("a", { href: `#/hubs/${enc(d.hubId)}` }, "hub"), " / ",
        h("a", { href: `#/integrations/${enc(d.integrationId)}` }, i.name), " / delivery"),
      h("h2", {}, "Delivery ", h("code", { id: "delivery-id" }, d.deliveryId)),
      h("dl", { class: "config", id: "delivery" },
        [["status", d.status], ["attempts", d.attempts], ["last status", d.lastStatus ?? ""],
         ["last error", d.lastError ?? ""], ["activity", d.activityId],
         ["conversation", d.conversationId], ["created", fmtTime(d.createdAt)],
         ["updated", fmtTime(d.updatedAt)], ["next attempt", fmtTime(d.nextAttemptAt)]]
          .map(([k, v]) => [h("dt", {}, k), h("dd", { dataset: { field: k } }, String(v))])),
      h("section", { class: "card" }, h("header", { class: "row" }, h("h3", {}, "Attempts"),
        h("button", { type: "button", id: "redeliver", onclick: () => attempt(errs, async () => {
          const { jobId } = await api("POST", `/api/v1/integrations/${enc(d.integrationId)}/redeliver`,
            { deliveryId: d.deliveryId });
          trackJob(jobId, jobs, () => setTimeout(() => attempt(errs, load), 300));
        }) }, "Redeliver"),
        h("button", { type: "button", id: "delivery-refresh", onclick: () => attempt(errs, load) }, "Refresh")),
      errs, jobs, table(["#", "At", "HTTP", "Error", "Latency", "Answer"], rows, { id: "attempts" })));
  };
  await load();
  return null;
}
