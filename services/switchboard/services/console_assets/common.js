// Pieces several pages share: secrets shown once, job progress, two-step buttons.
import { h, clear, notice } from "./dom.js";
import { api, enc } from "./api.js";

/** A panel with secrets the API shows once (a private key, an access token). */
export function showOnce(title, secrets) {
  const rows = Object.entries(secrets).filter(([, v]) => typeof v === "string" && v);
  if (!rows.length) return null;
  const panel = h("section", { class: "card once", id: "shown-once", role: "alert" },
    h("h3", {}, title),
    h("p", {}, "Shown once: copy it now. The hub keeps only what it needs to check it."),
    h("dl", {}, rows.map(([k, v]) => [h("dt", {}, k),
      h("dd", {}, h("code", { class: "secret", dataset: { name: k } }, v))])),
    h("button", { type: "button", onclick: () => panel.remove() }, "I have copied it"));
  document.getElementById("main").prepend(panel);
  return panel;
}

/** Follow a redeliver/replay job until it ends; `done` runs after. */
export function trackJob(jobId, into, done) {
  const line = h("p", { class: "job", dataset: { jobId, state: "running" } }, `job ${jobId}: started`);
  into.append(line);
  const poll = async () => {
    let job;
    try {
      job = await api("GET", `/api/v1/jobs/${enc(jobId)}`);
    } catch (e) {
      line.textContent = `job ${jobId}: ${e.message}`;
      return;
    }
    line.dataset.state = job.state;
    line.textContent = `${job.kind} job ${job.jobId}: ${job.state}, ${job.done}/${job.total}` +
      (job.skipped ? `, ${job.skipped} skipped` : "") + (job.error ? ` (${job.error})` : "");
    if (job.state === "running") setTimeout(poll, 500);
    else if (done) done(job);
  };
  poll();
}

/** A button that asks "sure?" by changing its label, then acts on the second click. */
export function confirmButton(label, action, props = {}) {
  let armed = false;
  let timer = null;
  const btn = h("button", { type: "button", ...props, onclick: async () => {
    if (!armed) {
      armed = true;
      btn.textContent = `Really ${label.toLowerCase()}?`;
      btn.classList.add("danger");
      timer = setTimeout(() => { armed = false; btn.textContent = label; }, 5000);
      return;
    }
    clearTimeout(timer);
    btn.disabled = true;
    await action();
  } }, label);
  return btn;
}

/** Run `fn`, showing its error (if any) in `status`. */
export async function attempt(status, fn) {
  clear(status);
  try {
    return await fn();
  } catch (e) {
    status.append(notice(e.message, "error"));
    return undefined;
  }
}

export function table(headers, rows, props = {}) {
  return h("table", props, h("thead", {}, h("tr", {}, headers.map((t) => h("th", {}, t)))),
    h("tbody", {}, rows));
}
