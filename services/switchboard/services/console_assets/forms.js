// The "new integration" form of each channel, built from the API's own OpenAPI schemas
// (components.schemas.<Channel>Config), so a new field shows up without console changes.
import { h } from "./dom.js";

// Filled in by the hub (from the provider or made by it): never asked for.
const FILLED = new Set(["channel", "phoneNumber", "capabilities", "pageId", "appId", "teamId",
  "botName", "botUserId", "state", "inboundSecret", "userName", "botAccessToken",
  "appAccessToken"]);

let specPromise = null;

/** {channelName: schema} from /openapi.json (fetched once; it needs no token). */
export async function channelSchemas() {
  if (!specPromise) {
    specPromise = fetch("/openapi.json", { credentials: "omit" }).then((r) => r.json());
  }
  const spec = await specPromise;
  const all = spec.components.schemas;
  const out = {};
  for (const [name, schema] of Object.entries(all)) {
    const tag = schema.properties && schema.properties.channel;
    if (name.endsWith("Config") && tag && Array.isArray(tag.enum)) out[tag.enum[0]] = schema;
  }
  return { channels: out, all };
}

function resolve(all, s) {
  if (s && s.$ref) return all[s.$ref.split("/").pop()];
  if (s && Array.isArray(s.anyOf)) {
    const other = s.anyOf.find((x) => x.type !== "null");
    return resolve(all, other);
  }
  return s || {};
}

function label(name) {
  return name.replace(/([A-Z])/g, " $1").replace(/^./, (c) => c.toUpperCase());
}

/** Inputs for one channel's fields; returns {fields: Node[], read(): configuration}. */
export function configFields(channel, schema, all) {
  const required = new Set(schema.required || []);
  const readers = [];
  const nodes = [];
  for (const [name, raw] of Object.entries(schema.properties || {})) {
    if (FILLED.has(name)) continue;
    const s = resolve(all, raw);
    const id = `cfg-${name}`;
    const req = required.has(name);
    const hint = raw.writeOnly || s.writeOnly ? " (secret: never shown again)" : "";
    let input;
    let read;
    if (s.type === "boolean") {
      input = h("input", { type: "checkbox", id, name, checked: Boolean(raw.default) });
      read = () => input.checked;
    } else if (Array.isArray(s.enum)) {
      const options = s.enum.filter((v) => !(channel === "Direct" && v === "System"));
      input = h("select", { id, name }, options.map((v) => h("option", { value: v }, v)));
      read = () => input.value;
    } else if (s.type === "array" && s.items && s.items.type === "string") {
      input = h("input", { type: "text", id, name, placeholder: "comma-separated",
        value: Array.isArray(raw.default) ? raw.default.join(", ") : "" });
      read = () => {
        const items = input.value.split(/[,\n]/).map((v) => v.trim()).filter(Boolean);
        return items.length ? items : undefined;
      };
    } else if (s.type === "array") {
      // `start`: a greeting of text messages, one per line.
      input = h("textarea", { id, name, rows: 2, placeholder: "one text message per line" });
      read = () => {
        const lines = input.value.split("\n").map((v) => v.trim()).filter(Boolean);
        return lines.length ? lines.map((text) => ({ type: "text", text })) : undefined;
      };
    } else if (s.type === "number" || s.type === "integer") {
      input = h("input", { type: "number", id, name, step: "any" });
      read = () => (input.value === "" ? undefined : Number(input.value));
    } else if (s.type === "string") {
      const secret = Boolean(hint);
      input = h("input", { type: secret ? "password" : "text", id, name, autocomplete: "off",
        required: req });
      read = () => (input.value === "" ? undefined : input.value);
    } else {
      continue;
    }
    readers.push([name, read]);
    nodes.push(h("label", { for: id, class: input.type === "checkbox" ? "check" : "" },
      h("span", {}, label(name), req ? " *" : "", hint), input));
  }
  return {
    fields: nodes,
    read() {
      const config = {};
      for (const [name, read] of readers) {
        const v = read();
        if (v !== undefined) config[name] = v;
      }
      return config;
    },
  };
}
