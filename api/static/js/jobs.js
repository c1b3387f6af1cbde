// /ui/jobs: keep the server-rendered table live. Every 2 s (while the tab is visible) the same page of
// GET /v1/jobs, with the page's filters, is read again: rows update in place, new jobs appear on the first
// page, jobs that left the filter go. Selected rows stay selected.

import { api, refreshLive } from "./api.js";
import { fmtEta, fmtNum, fmtTime, modelSummary } from "./format.js";

const POLL_MS = 2000;
const table = document.querySelector('[data-testid="jobs-table"]');
const body = table.tBodies[0];
const template = document.getElementById("job-row");
const compare = document.querySelector('[data-testid="compare-selected"]');
const total = document.querySelector('[data-testid="jobs-total"]');

function fill(row, job) {
  const set = (name, text) => { row.querySelector(`[data-field="${name}"]`).textContent = text; };
  row.dataset.jobId = job.id;
  row.className = `status-${job.status}`;
  row.querySelector('input[name="ids"]').value = job.id;
  const link = row.querySelector('[data-field="name"]');
  link.href = `/ui/jobs/${job.id}`;
  link.textContent = job.name;
  const regime = row.querySelector('[data-field="regime"]');
  regime.textContent = job.regime;
  regime.className = `regime-${job.regime}`;
  set("model", modelSummary(job.spec));
  set("status", job.status);
  row.querySelector('[data-field="progress"]').value = job.progress;
  set("percent", `${Math.floor(job.progress * 100)}%`);
  set("loss", fmtNum((job.final_metrics ?? job.latest_metrics ?? {}).train_loss));
  set("eta", fmtEta(job.eta_seconds));
  set("created", fmtTime(job.created_at));
}

function rowFor(job) {
  const existing = body.querySelector(`tr[data-job-id="${CSS.escape(job.id)}"]`);
  if (existing) return existing;
  return template.content.firstElementChild.cloneNode(true);
}

async function refresh() {
  const params = new URLSearchParams(location.search);
  params.set("limit", table.dataset.limit);
  params.set("offset", table.dataset.offset);
  for (const [k, v] of [...params]) if (v === "") params.delete(k);
  const page = await api(`/v1/jobs?${params}`);
  const rows = page.items.map((job) => { const row = rowFor(job); fill(row, job); return row; });
  body.replaceChildren(...rows);
  total.textContent = String(page.total);
  document.querySelector('[data-testid="no-jobs"]')?.toggleAttribute("hidden", rows.length > 0);
  updateCompare();
}

function updateCompare() {
  compare.disabled = body.querySelectorAll('input[name="ids"]:checked').length < 2;
}

body.addEventListener("change", updateCompare);
updateCompare();

refreshLive(refresh, POLL_MS);
