// /ui/compare?ids=...: one metric of the chosen jobs overlaid, coloured by regime. Each series comes reduced
// by the server (/v1/series?points=N: min and max of each of N/2 step buckets, so spikes stay), about two
// points per pixel column; zooming in fetches that range again in detail. CSV export is full resolution.

import { api, liveState, setViewParams, viewParam } from "./api.js";
import { LiveChart, regimeColour } from "./chart.js";
import { TERMINAL } from "./format.js";

const POLL_MS = 3000;
const runs = JSON.parse(document.getElementById("runs").textContent);
const el = document.querySelector('[data-testid="compare-chart"]');
const metricSelect = document.querySelector('[data-testid="metric"]');
const ids = runs.map((r) => r.id).join(",");

let metric = viewParam("metric") || "train_loss";
metricSelect.value = metric;

function label(run) {
  const r = run.radius === null || run.radius === undefined ? "∞" : run.radius;
  return `${run.name} · ${run.regime} · ${run.model} · r=${r} · lr=${run.lr ?? "–"}`;
}

function colours() {
  const byRegime = {};
  for (const run of runs) (byRegime[run.regime] ??= []).push(run);
  return runs.map((run) => regimeColour(run.regime, byRegime[run.regime].indexOf(run), byRegime[run.regime].length));
}

function viewOf() {
  try { return JSON.parse(viewParam("view") || "{}"); } catch { return {}; }
}

async function fullCsv() {
  const page = await api(`/v1/series?${new URLSearchParams({ job_ids: ids, metric })}`);
  const names = new Map(runs.map((r) => [r.id, r.name]));
  const rows = page.series.flatMap((s) => s.steps.map((step, i) => [s.job_id, names.get(s.job_id), step, s.values[i]]));
  return { header: ["job_id", "name", "step", metric], rows };
}

let chart = null;
function makeChart() {
  const view = viewOf();
  const palette = colours();
  if (chart) chart.destroy();
  chart = new LiveChart(el, {
    name: `compare-${metric}`, yLabel: metric, logY: view.logY ?? metric.endsWith("loss"), view, csv: fullCsv,
    series: runs.map((run, i) => ({ label: label(run), stroke: palette[i] })),
    onView: (v) => { setViewParams({ view: JSON.stringify(v) }); zoomChanged(v.x); },
  });
}

// Aligned on the union of the steps (uPlot draws one x array); jobs of one cadence share their steps.
function aligned(page) {
  const tables = page.series.map((s) => [s.steps, s.values]);
  return tables.length ? uPlot.join(tables) : [[]];
}

let range = null;  // the zoomed step range, fetched in detail
async function load() {
  const points = Math.min(20000, Math.max(200, 2 * Math.round(el.clientWidth)));
  const params = new URLSearchParams({ job_ids: ids, metric, points });
  if (range) { params.set("from_step", Math.max(0, Math.floor(range[0]))); params.set("to_step", Math.ceil(range[1])); }
  const started = performance.now();
  const page = await api(`/v1/series?${params}`);
  const fetched = performance.now();
  chart.setData(aligned(page));
  await new Promise(requestAnimationFrame);  // uPlot draws on the next frame
  // How long the last load took, for bench/bench_dashboard.py.
  el.dataset.fetchMs = String(Math.round(fetched - started));
  el.dataset.drawMs = String(Math.round(performance.now() - fetched));
}

let zoomTimer = null;
function zoomChanged(x) {
  const next = x ? [x[0], x[1]] : null;
  if (JSON.stringify(next) === JSON.stringify(range)) return;
  range = next;
  clearTimeout(zoomTimer);
  zoomTimer = setTimeout(() => load().catch((e) => liveState(`load failed: ${e.message}`, "error")), 250);
}

metricSelect.addEventListener("change", async () => {
  metric = metricSelect.value;
  setViewParams({ metric, view: null });
  range = null;
  makeChart();
  await load();
});

// While any compared job runs, read its status and the series again; the chart keeps zoom and hidden series.
async function poll() {
  const running = runs.filter((r) => !TERMINAL.has(r.status));
  if (!running.length) { liveState("all finished", "done"); return; }
  if (document.visibilityState === "visible") {
    try {
      for (const run of running) {
        run.status = (await api(`/v1/jobs/${run.id}`)).status;
        document.querySelector(`tr[data-job-id="${run.id}"] [data-field="status"]`).textContent = run.status;
      }
      await load();
      liveState(`live (${running.length} running)`, "live");
    } catch (error) {
      liveState(`update failed (${error.message}); retrying`, "reconnecting");
    }
  }
  setTimeout(poll, POLL_MS);
}

makeChart();
load().then(poll);
