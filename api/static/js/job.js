// /ui/jobs/{id}: follow the job over /v1/jobs/{id}/events (server-sent events: every stored point at full
// resolution, then each new batch within a poll of being stored) and draw it.

import { api, liveState, setViewParams, viewParam } from "./api.js";
import { LiveChart } from "./chart.js";
import { fmtEta, fmtNum, fmtTime, TERMINAL } from "./format.js";

const root = document.getElementById("job");
const jobId = root.dataset.jobId;
const radius = root.dataset.radius === "" ? null : Number(root.dataset.radius);
const field = (name) => document.querySelector(`[data-field="${name}"]`);

// Every metric's column, aligned on steps (null where a point lacks it).
const steps = [];
const columns = new Map();

function column(name) {
  if (!columns.has(name)) columns.set(name, new Array(steps.length).fill(null));
  return columns.get(name);
}

function addPoints(points) {
  for (const { step, values } of points) {
    steps.push(step);
    for (const col of columns.values()) col.push(null);
    for (const [name, v] of Object.entries(values)) {
      if (typeof v === "number") column(name)[steps.length - 1] = v;
    }
  }
}

// One chart per panel; each appears once its first metric does, and is rebuilt when a metric joins it.
const PANELS = [
  { id: "loss", testid: "loss-chart", y: "loss", log: true, metrics: [["train_loss", "#1f6fd1"], ["test_loss", "#e0671b"]] },
  { id: "acc", testid: "accuracy-chart", y: "accuracy", metrics: [["train_accuracy", "#1f6fd1"], ["test_accuracy", "#e0671b"]] },
  { id: "wdist", testid: "wdist-chart", y: "‖W − W₀‖", metrics: [["w_dist", "#6a3d9a"]], radius: true },
  { id: "sigma", testid: "sigma-chart", y: "σmin(J)", log: true, metrics: [["jacobian_sigma_min", "#2a9d4b"]] },
];
const charts = new Map();

function viewOf(id) {
  const raw = viewParam(id);
  try { return raw ? JSON.parse(raw) : {}; } catch { return {}; }
}

function panelData(panel, present) {
  const data = [steps, ...present.map((m) => columns.get(m))];
  if (panel.radius && radius !== null) data.push(steps.map(() => radius));
  return data;
}

function draw() {
  for (const panel of PANELS) {
    const present = panel.metrics.filter(([m]) => columns.has(m)).map(([m]) => m);
    if (!present.length) continue;
    let entry = charts.get(panel.id);
    if (!entry || entry.present.join() !== present.join()) {
      const el = document.querySelector(`[data-testid="${panel.testid}"]`);
      el.closest("figure").hidden = false;
      if (entry) entry.chart.destroy();
      const view = viewOf(panel.id);
      const series = present.map((m) => ({ label: m, stroke: panel.metrics.find(([n]) => n === m)[1] }));
      if (panel.radius && radius !== null) series.push({ label: `radius r = ${radius}`, stroke: "#c62828", dash: [6, 4] });
      const chart = new LiveChart(el, {
        name: `${jobId}-${panel.id}`, series, yLabel: panel.y, logY: view.logY ?? Boolean(panel.log), view,
        onView: (v) => setViewParams({ [panel.id]: JSON.stringify(v) }),
      });
      entry = { chart, present };
      charts.set(panel.id, entry);
    }
    entry.chart.setData(panelData(panel, present));
  }
}

let pending = false;
function scheduleDraw() {
  if (pending) return;
  pending = true;
  requestAnimationFrame(() => { pending = false; draw(); });
}

function showStatus(job) {
  const status = field("status");
  status.textContent = job.status;
  status.className = `badge status-${job.status}`;
  field("progress").value = job.progress;
  field("steps").textContent = job.total_steps ? `${job.step} / ${job.total_steps}` : String(job.step);
  field("eta").textContent = fmtEta(job.eta_seconds);
  field("attempt").textContent = String(job.attempt);
  field("loss").textContent = fmtNum((job.final_metrics ?? job.latest_metrics ?? {}).train_loss);
  field("finished").textContent = fmtTime(job.finished_at);
  const error = field("error");
  error.textContent = job.error ?? "";
  error.hidden = !job.error;
  const cancel = document.querySelector('[data-testid="cancel-job"]');
  cancel.hidden = TERMINAL.has(job.status);
  if (job.cancel_requested && !cancel.hidden) { cancel.disabled = true; cancel.textContent = "Cancelling…"; }
}

async function showCheckpoint() {
  try {
    const meta = await api(`/v1/jobs/${jobId}/checkpoint/meta`);
    const box = document.querySelector('[data-testid="checkpoint"]');
    box.innerHTML = `<a href="/v1/jobs/${jobId}/checkpoint" download>Download checkpoint</a>
      (step <span></span>) sha256 <code data-testid="checkpoint-sha256"></code>`;
    box.querySelector("span").textContent = String(meta.step);
    box.querySelector("code").textContent = meta.sha256;
  } catch { /* no checkpoint (yet): the page says so already */ }
}

document.querySelector('[data-testid="cancel-job"]').addEventListener("click", async (event) => {
  const button = event.currentTarget;
  button.disabled = true;
  try {
    showStatus(await api(`/v1/jobs/${jobId}/cancel`, { method: "POST" }));
  } catch (error) {
    button.disabled = false;
    liveState(`cancel failed: ${error.message}`, "error");
  }
});

// A running job's newest checkpoint: looked up when the steps pass a multiple of the spec's checkpoint_every
// (at most every 2 s), and otherwise every 10 s.
const checkpointEvery = Number(root.dataset.checkpointEvery) || null;
let checkpointAt = 0;
let checkpointStep = -1;

function maybeShowCheckpoint(step, minMs) {
  const crossed = checkpointEvery && Math.floor(step / checkpointEvery) > Math.floor(checkpointStep / checkpointEvery);
  if ((crossed && performance.now() - checkpointAt > 2000) || performance.now() - checkpointAt > minMs) {
    checkpointAt = performance.now();
    checkpointStep = step;
    showCheckpoint();
  }
}

const events = new EventSource(`/v1/jobs/${jobId}/events`);
events.addEventListener("open", () => liveState("live", "live"));
events.addEventListener("metrics", (e) => {
  addPoints(JSON.parse(e.data).points);
  scheduleDraw();
  maybeShowCheckpoint(steps[steps.length - 1], Infinity);
});
events.addEventListener("status", (e) => {
  const job = JSON.parse(e.data);
  showStatus(job);
  if (job.status === "running") maybeShowCheckpoint(job.step, 10_000);
  if (TERMINAL.has(job.status)) {
    events.close();  // the server has ended the stream; do not let EventSource reconnect
    liveState(`finished: ${job.status}`, "done");
    showCheckpoint();
  }
});
// EventSource reconnects by itself, sending Last-Event-ID: the server resumes after the last step drawn.
events.addEventListener("error", () => {
  if (events.readyState !== EventSource.CLOSED) liveState("reconnecting…", "reconnecting");
});
