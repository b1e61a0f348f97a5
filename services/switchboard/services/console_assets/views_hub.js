// Hubs, and one hub: its integrations, its charts, its dead letters.
import { h, clear, fmtTime, notice } from "./dom.js";
import { api, enc, session } from "./api.js";
import { lineChart } from "./charts.js";
import { channelSchemas, configFields } from "./forms.js";
import { attempt, confirmButton, showOnce, table, trackJob } from "./common.js";

const ACTIVE = 3000, PAUSED = 3002;
const HAS_KEYS = new Set(["Direct", "System", "Syncro"]);

export async function hubsView(main) {
  const hubs = await api("GET", "/api/v1/hubs");
  if (!session.isAdmin && hubs.length === 1) {
    location.replace(`#/hubs/${enc(hubs[0].hubId)}`);
    return null;
  }
  const status = h("div", {});
  main.append(h("h2", {}, "Hubs"), status,
    table(["Name", "Hub id", "Integrations", "Created"], hubs.map((hub) => h("tr", {},
      h("td", {}, h("a", { href: `#/hubs/${enc(hub.hubId)}`, class: "hub-link" }, hub.name)),
      h("td", {}, h("code", {}, hub.hubId)),
      h("td", {}, String(hub.integrationCount ?? "")),
      h("td", {}, fmtTime(hub.createdAt)))), { id: "hubs" }));
  if (session.isAdmin) {
    const name = h("input", { type: "text", id: "hub-name", required: true, maxlength: 200 });
    main.append(h("form", { class: "card", id: "new-hub", onsubmit: (ev) => {
      ev.preventDefault();
      attempt(status, async () => {
        const hub = await api("POST", "/api/v1/hubs", { name: name.value.trim() });
        location.hash = `#/hubs/${enc(hub.hubId)}`;
        showOnce(`Access token of hub ${hub.name}`, { accessToken: hub.accessToken });
      });
    } }, h("h3", {}, "New hub"), h("label", { for: "hub-name" }, h("span", {}, "Name"), name),
    h("button", { type: "submit" }, "Create hub")));
  }
  return null;
}

export async function hubView(main, hubId) {
  const hub = await api("GET", `/api/v1/hubs/${enc(hubId)}`);
  const status = h("div", {});
  const integrationsBox = h("div", {});
  const chartsBox = h("section", { class: "card", id: "charts" });
  const deadBox = h("section", { class: "card", id: "dead-letters" });
  let integrations = [];
  const load = async () => {
    integrations = await api("GET", `/api/v1/integrations/hubs/${enc(hubId)}`);
    clear(integrationsBox).append(integrationsTable(integrations, status, reload));
  };
  const dead = () => deadLetters(deadBox, integrations);
  const reload = () => attempt(status, async () => { await load(); await dead(); });
  const charts = () => hubCharts(chartsBox, hubId);
  main.append(
    h("nav", { class: "crumbs" }, h("a", { href: "#/hubs" }, "Hubs"), " / ", hub.name),
    h("h2", {}, hub.name, " ", h("code", { class: "muted" }, hub.hubId)),
    status, integrationsBox, await createForm(hubId, status, reload), chartsBox, deadBox);
  await load();
  await Promise.all([dead(), charts()]);
  const timer = setInterval(() => { charts().catch(() => {}); }, 30000);
  return () => clearInterval(timer);
}

function integrationsTable(integrations, status, reload) {
  const rows = integrations.map((i) => {
    const paused = i.statusId === PAUSED;
    const patch = (body) => attempt(status, async () => {
      const out = await api("PATCH", `/api/v1/integrations/${enc(i.integrationId)}`, body);
      const c = out.configuration || {};
      showOnce(`New keys of ${i.name}`, { privateSigningKey: c.privateSigningKey,
        webhookSecret: c.webhookSecret, inboundSecret: c.inboundSecret, inboundUrl: c.inboundUrl });
      await reload();
    });
    const regenerate = () => {
      const { publicSigningKey, ...config } = i.configuration || {};
      return patch({ configuration: { ...config, regenerateKeys: true } });
    };
    return h("tr", { dataset: { integrationId: i.integrationId, name: i.name } },
      h("td", {}, h("a", { href: `#/integrations/${enc(i.integrationId)}`, class: "int-link" }, i.name)),
      h("td", {}, i.channelId), h("td", {}, i.integrationTypeId),
      h("td", { class: paused ? "st-paused" : "st-active" }, paused ? "Paused" : "Active"),
      h("td", { class: "actions" },
        h("button", { type: "button", class: "toggle",
          onclick: () => patch({ statusId: paused ? ACTIVE : PAUSED }) }, paused ? "Resume" : "Pause"),
        HAS_KEYS.has(i.channelId)
          ? confirmButton("Regenerate keys", regenerate, { class: "regen" }) : null,
        confirmButton("Delete", () => attempt(status, async () => {
          await api("DELETE", `/api/v1/integrations/${enc(i.integrationId)}`);
          await reload();
        }), { class: "delete" })));
  });
  return h("section", { class: "card" }, h("h3", {}, "Integrations"),
    rows.length ? table(["Name", "Channel", "Type", "Status", ""], rows, { id: "integrations" })
      : h("p", { class: "muted", id: "integrations" }, "No integrations yet."));
}

async function createForm(hubId, status, reload) {
  const { channels, all } = await channelSchemas();
  const channel = h("select", { id: "new-channel" },
    Object.keys(channels).map((c) => h("option", { value: c }, c)));
  const name = h("input", { type: "text", id: "new-name", required: true, maxlength: 200 });
  const fieldsBox = h("div", { class: "fields" });
  let current = null;
  const pick = () => {
    current = configFields(channel.value, channels[channel.value], all);
    clear(fieldsBox).append(...current.fields);
  };
  channel.addEventListener("change", pick);
  pick();
  const form = h("form", { class: "card", id: "new-integration", onsubmit: (ev) => {
    ev.preventDefault();
    attempt(status, async () => {
      const created = await api("POST", `/api/v1/integrations/hubs/${enc(hubId)}`, {
        channelId: channel.value, name: name.value.trim(), configuration: current.read() });
      const c = created.configuration || {};
      const panel = showOnce(`Keys of ${created.name}`, { privateSigningKey: c.privateSigningKey,
        webhookSecret: c.webhookSecret, inboundSecret: c.inboundSecret, inboundUrl: c.inboundUrl });
      if (panel) panel.dataset.integrationId = created.integrationId;
      form.reset();
      pick();
      await reload();
    });
  } },
  h("h3", {}, "New integration"),
  h("label", { for: "new-channel" }, h("span", {}, "Channel"), channel),
  h("label", { for: "new-name" }, h("span", {}, "Name *"), name),
  fieldsBox, h("button", { type: "submit" }, "Create integration"));
  return form;
}

async function hubCharts(box, hubId) {
  const stats = await api("GET", `/api/v1/hubs/${enc(hubId)}/stats`);
  const b = stats.buckets;
  clear(box).append(h("header", { class: "row" }, h("h3", {}, "Last hour"),
    h("button", { type: "button", id: "charts-refresh",
      onclick: () => hubCharts(box, hubId).catch((e) => box.append(notice(e.message, "error"))) },
    "Refresh")),
  h("div", { class: "charts" },
    lineChart("Activities in", b, [{ key: "activitiesIn", label: "activities", cls: "s1" }]),
    lineChart("Deliveries out", b, [
      { key: "deliveriesOut", label: "attempts", cls: "s1" },
      { key: "delivered", label: "delivered", cls: "s2" },
      { key: "errors", label: "failed attempts", cls: "s3" },
      { key: "failed", label: "dead letters", cls: "s4" }]),
    lineChart("Delivery latency", b, [
      { key: "latencyAvgMs", label: "average", cls: "s1" },
      { key: "latencyP95Ms", label: "p95", cls: "s3" }], " ms")));
}

// One listing per integration: a few at a time, and at most DEAD_MAX_INTEGRATIONS of them,
// so a large hub's page stays well inside the API's rate limit for its token.
const DEAD_MAX_INTEGRATIONS = 40;
const DEAD_CONCURRENCY = 4;

async function deadLetters(box, integrations) {
  const names = new Map(integrations.map((i) => [i.integrationId, i.name]));
  const todo = integrations.slice(0, DEAD_MAX_INTEGRATIONS);
  const pages = [];
  for (let k = 0; k < todo.length; k += DEAD_CONCURRENCY) {
    pages.push(...await Promise.all(todo.slice(k, k + DEAD_CONCURRENCY).map((i) =>
      api("GET", `/api/v1/integrations/${enc(i.integrationId)}/deliveries?status=failed&limit=100`))));
  }
  const items = pages.flatMap((p) => p.items).sort((a, b) => b.updatedAt - a.updatedAt);
  const jobs = h("div", {});
  const rows = items.map((d) => h("tr", { dataset: { deliveryId: d.deliveryId } },
    h("td", {}, fmtTime(d.updatedAt)),
    h("td", {}, names.get(d.integrationId) || d.integrationId),
    h("td", {}, h("a", { href: `#/deliveries/${enc(d.deliveryId)}` }, h("code", {}, d.deliveryId))),
    h("td", {}, String(d.attempts)), h("td", {}, d.lastStatus ?? ""), h("td", {}, d.lastError ?? ""),
    h("td", {}, h("button", { type: "button", class: "redeliver", onclick: () =>
      attempt(jobs, async () => {
        const { jobId } = await api("POST", `/api/v1/integrations/${enc(d.integrationId)}/redeliver`,
          { deliveryId: d.deliveryId });
        trackJob(jobId, jobs);
      }) }, "Redeliver"))));
  const partial = integrations.length > todo.length
    ? h("p", { class: "muted" }, `Of the first ${todo.length} integrations; open any other ` +
      "integration and filter its deliveries by failed.") : null;
  clear(box).append(h("h3", {}, "Dead letters"), partial, jobs,
    rows.length ? table(["Failed at", "Integration", "Delivery", "Attempts", "Last status", "Error", ""],
      rows, { id: "dead" }) : h("p", { class: "muted", id: "dead" }, "None: nothing has failed for good."));
}
