// Line charts of a hub's last hour, drawn as inline SVG from /api/v1/hubs/{id}/stats.
import { h, svg, fmtClock } from "./dom.js";

const W = 600, H = 160, PAD_L = 44, PAD_R = 8, PAD_T = 10, PAD_B = 22;

/** One chart: `series` = [{key, label, cls}] read from each bucket; null values are gaps. */
export function lineChart(title, buckets, series, unit = "") {
  const values = series.flatMap((s) => buckets.map((b) => b[s.key]).filter((v) => v !== null));
  const max = Math.max(1, ...values);
  const n = buckets.length;
  const x = (i) => PAD_L + (i * (W - PAD_L - PAD_R)) / Math.max(1, n - 1);
  const y = (v) => PAD_T + (H - PAD_T - PAD_B) * (1 - v / max);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img",
    "aria-label": title });
  root.append(svg("title", {}, title));
  for (const frac of [0, 0.5, 1]) {
    const v = max * frac;
    root.append(svg("line", { x1: PAD_L, x2: W - PAD_R, y1: y(v), y2: y(v), class: "grid" }));
    root.append(svg("text", { x: PAD_L - 4, y: y(v) + 4, class: "axis", "text-anchor": "end" },
      `${Math.round(v)}${unit}`));
  }
  if (n) {
    root.append(svg("text", { x: PAD_L, y: H - 6, class: "axis" }, fmtClock(buckets[0].at)));
    root.append(svg("text", { x: W - PAD_R, y: H - 6, class: "axis", "text-anchor": "end" },
      fmtClock(buckets[n - 1].at)));
  }
  for (const s of series) {
    // A run of known values is one polyline; a bucket without a value breaks it.
    let run = [];
    const flush = () => {
      if (run.length === 1) {
        const [px, py] = run[0];
        root.append(svg("circle", { cx: px, cy: py, r: 2.5, class: `dot ${s.cls}` }));
      } else if (run.length > 1) {
        root.append(svg("polyline", { points: run.map((p) => p.join(",")).join(" "),
          class: `line ${s.cls}` }));
      }
      run = [];
    };
    buckets.forEach((b, i) => {
      const v = b[s.key];
      if (v === null || v === undefined) flush();
      else run.push([x(i).toFixed(1), y(v).toFixed(1)]);
    });
    flush();
  }
  const totals = series.map((s) => {
    const vals = buckets.map((b) => b[s.key]).filter((v) => v !== null && v !== undefined);
    const total = unit ? (vals.length ? Math.max(...vals) : null) : vals.reduce((a, v) => a + v, 0);
    return h("span", { class: `legend ${s.cls}`, dataset: { series: s.key, total: total ?? "" } },
      `${s.label}: ${total === null ? "–" : total}${unit && total !== null ? unit : ""}`);
  });
  return h("figure", { class: "chart-box" }, h("figcaption", {}, title, " ", totals), root);
}
