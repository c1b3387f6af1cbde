// /ui/sweeps/{id}: the sweep's progress, kept live from GET /v1/sweeps/{id} every 2 s while it runs, and its
// Figure-4 heatmaps drawn from GET /v1/sweeps/{id}/summary (again whenever another config finishes). The view
// (metric, reduce, rows, cols, panels, log colour) lives in the URL, so a reload or a shared link shows the same.

import { api, liveState, setViewParams, viewParam } from "./api.js";
import { fmtEta, fmtNum, fmtTime, TERMINAL } from "./format.js";
import { drawHeatmap } from "./heatmap.js";

const POLL_MS = 2000;
const view = JSON.parse(document.getElementById("view").textContent);
const el = document.querySelector('[data-testid="sweep-heatmap"]');
const errorBox = document.querySelector('[data-testid="heatmap-error"]');
const caption = document.querySelector('[data-field="caption"]');
const png = document.querySelector('[data-testid="heatmap-png"]');
const select = (name) => document.querySelector(`[data-testid="heatmap-controls"] [name="${name}"]`);
const AXES = ["rows", "cols", "split"];

// The view: from the URL, else the page's defaults (width by radius, a panel per regime; the objective's metric).
const state = {
  metric: viewParam("metric") || view.objective.metric,
  reduce: viewParam("reduce") || "",  // "": the server's default (the objective's mode for its metric, else min)
  rows: viewParam("rows") ?? view.rows,
  cols: viewParam("cols") ?? (view.cols || ""),
  split: viewParam("split") ?? (view.split || ""),
  log: viewParam("log") !== "0",
};
for (const name of ["metric", ...AXES]) select(name).value = state[name];
select("log").checked = state.log;

function query() {
  const params = new URLSearchParams({ metric: state.metric, rows: state.rows });
  for (const name of ["cols", "split", "reduce"]) if (state[name]) params.set(name, state[name]);
  return params;
}

let summary = null;
let drawn = null;
function draw() {
  const t0 = performance.now();
  drawn = drawHeatmap(el, summary, { log: state.log });
  void el.offsetHeight;  // style and layout now, so that drawMs counts them (bench/bench_dashboard.py reads it)
  el.dataset.drawMs = (performance.now() - t0).toFixed(1);
  requestAnimationFrame(() => requestAnimationFrame(() => { el.dataset.frameMs = (performance.now() - t0).toFixed(1); }));
  const logBox = select("log");
  logBox.disabled = !drawn.possibleLog;
  logBox.parentElement.title = drawn.possibleLog ? "" : "some values are 0 or negative: linear colour";
  const others = view.axes.filter((a) => !AXES.some((k) => summary[k]?.axis === a));
  caption.textContent = `${summary.reduce} of ${summary.metric} ${others.length ? `over ${others.join(", ")}` : "(one config per cell)"}`
    + ` · ${drawn.cells} cell${drawn.cells === 1 ? "" : "s"} with a value · colour ${drawn.log ? "log" : "linear"}`
    + (drawn.showNumbers ? "" : " · hover a cell for its value") + " · click a cell to open its best job";
}

async function load() {
  const t0 = performance.now();
  try {
    summary = await api(`/v1/sweeps/${view.sweep_id}/summary?${query()}`);
  } catch (error) {
    errorBox.textContent = error.message;
    errorBox.hidden = false;
    return;
  }
  el.dataset.fetchMs = (performance.now() - t0).toFixed(1);
  errorBox.hidden = true;
  // Offer the metrics the configs recorded (the chosen one stays, even before any config has finished).
  for (const option of select("metric").options) {
    option.hidden = !summary.metrics.includes(option.value) && option.value !== state.metric;
  }
  select("reduce").value = summary.reduce;
  png.href = `/v1/sweeps/${view.sweep_id}/heatmap.png?${query()}`;
  draw();
}

// Changing an axis to one another place holds swaps the two, so rows, cols and panels stay different axes.
for (const name of AXES) {
  select(name).addEventListener("change", () => {
    const chosen = select(name).value;
    for (const other of AXES) if (other !== name && chosen && state[other] === chosen) state[other] = state[name];
    state[name] = chosen;
    if (!state.rows) state.rows = view.axes.find((a) => a !== state.cols && a !== state.split);
    for (const axis of AXES) select(axis).value = state[axis];
    changed();
  });
}
select("metric").addEventListener("change", () => {
  state.metric = select("metric").value;
  state.reduce = state.metric.endsWith("accuracy") ? "max" : "";  // "": the server's default for the metric
  changed();
});
select("reduce").addEventListener("change", () => { state.reduce = select("reduce").value; changed(); });
select("log").addEventListener("change", () => {
  state.log = select("log").checked;
  setViewParams({ log: state.log ? null : "0" });
  if (summary) draw();
});

function changed() {
  setViewParams({ metric: state.metric, reduce: state.reduce || null, rows: state.rows, cols: state.cols,
                  split: state.split });
  load();
}

let resizeTimer = null;
window.addEventListener("resize", () => { clearTimeout(resizeTimer); resizeTimer = setTimeout(() => summary && draw(), 150); });

// Progress: the facts at the top, live; the heatmap again when a config finishes.
function showSweep(sweep) {
  const set = (field, text) => { document.querySelector(`#sweep [data-field="${field}"]`).textContent = text; };
  const badge = document.querySelector('[data-testid="sweep-status"]');
  badge.textContent = sweep.status;
  badge.className = `badge status-${sweep.status}`;
  document.querySelector('#sweep [data-field="progress"]').value = sweep.progress;
  set("percent", `${Math.floor(sweep.progress * 100)}%`);
  for (const cell of document.querySelectorAll("#sweep [data-count]")) {
    const n = sweep.counts[cell.dataset.count] ?? 0;
    cell.textContent = `${n} ${cell.dataset.count}`;
    cell.classList.toggle("zero", n === 0);
  }
  set("eta", fmtEta(sweep.eta_seconds));
  set("finished", fmtTime(sweep.finished_at));
  const best = document.querySelector('#sweep [data-field="best"]');
  best.textContent = fmtNum(sweep.best_value);
  best.href = sweep.best ? `/ui/jobs/${sweep.best.job_id}` : "#";
}

let finishedConfigs = -1;
async function poll() {
  if (document.visibilityState === "visible") {
    try {
      const sweep = await api(`/v1/sweeps/${view.sweep_id}`);
      showSweep(sweep);
      const finished = ["succeeded", "failed", "cancelled"].reduce((n, s) => n + (sweep.counts[s] ?? 0), 0);
      if (finished !== finishedConfigs) { finishedConfigs = finished; await load(); }
      if (TERMINAL.has(sweep.status)) { liveState("finished", "done"); return; }
      liveState("live", "live");
    } catch (error) {
      liveState(`update failed (${error.message}); retrying`, "reconnecting");
    }
  }
  setTimeout(poll, POLL_MS);
}

if (TERMINAL.has(view.status)) {
  load();
  liveState("finished", "done");
} else {
  poll();
}
