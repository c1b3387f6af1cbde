// /ui/sweeps: keep the server-rendered table live, as the jobs page does. Every 2 s (while the tab is visible)
// the same page of GET /v1/sweeps is read again: rows update in place and new sweeps appear on the first page.

import { api, refreshLive } from "./api.js";
import { fmtNum, fmtTime } from "./format.js";

const POLL_MS = 2000;
const table = document.querySelector('[data-testid="sweeps-table"]');
const body = table.tBodies[0];
const template = document.getElementById("sweep-row");
const total = document.querySelector('[data-testid="sweeps-total"]');

function fill(row, sweep) {
  const set = (name, text) => { row.querySelector(`[data-field="${name}"]`).textContent = text; };
  row.dataset.sweepId = sweep.id;
  row.className = `status-${sweep.status}`;
  const link = row.querySelector('[data-field="name"]');
  link.href = `/ui/sweeps/${sweep.id}`;
  link.textContent = sweep.name;
  set("status", sweep.status);
  for (const cell of row.querySelectorAll("[data-count]")) {
    const n = sweep.counts[cell.dataset.count] ?? 0;
    cell.textContent = String(n);
    cell.classList.toggle("zero", n === 0);
  }
  set("configs", String(sweep.n_configs));
  row.querySelector('[data-field="progress"]').value = sweep.progress;
  set("percent", `${Math.floor(sweep.progress * 100)}%`);
  set("best", fmtNum(sweep.best_value));
  set("objective", `${sweep.objective.mode} ${sweep.objective.metric}`);
  set("axes", sweep.axes.join(" × "));
  set("created", fmtTime(sweep.created_at));
}

function rowFor(sweep) {
  return body.querySelector(`tr[data-sweep-id="${CSS.escape(sweep.id)}"]`)
    ?? template.content.firstElementChild.cloneNode(true);
}

async function refresh() {
  const params = new URLSearchParams({ limit: table.dataset.limit, offset: table.dataset.offset });
  const page = await api(`/v1/sweeps?${params}`);
  const rows = page.items.map((sweep) => { const row = rowFor(sweep); fill(row, sweep); return row; });
  body.replaceChildren(...rows);
  total.textContent = String(page.total);
  const offset = Number(table.dataset.offset);
  document.querySelector('[data-testid="sweeps-range"]').textContent =
    `${page.total ? offset + 1 : 0}–${Math.min(offset + Number(table.dataset.limit), page.total)} of ${page.total}`;
  document.querySelector('[data-testid="no-sweeps"]')?.toggleAttribute("hidden", rows.length > 0);
}

refreshLive(refresh, POLL_MS);
