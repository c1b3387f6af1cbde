// The Figure-4 heatmap of a sweep's summary (GET /v1/sweeps/{id}/summary): one SVG panel per split value,
// sharing one colour scale (log when every value is positive, so losses from 1e-13 to 0.5 stay apart), the value
// in each cell when the cells are big enough to read, and each cell a link to the job that achieved it.
// Built as one SVG string per panel: 2 x 2,500 cells draw in a few tens of milliseconds (bench/RESULTS.md).

// matplotlib's viridis (CC0), sampled at 9 points and interpolated linearly.
const VIRIDIS = [
  [68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141],
  [39, 173, 129], [92, 200, 99], [170, 220, 50], [253, 231, 37],
];

export function viridis(t) {
  const x = Math.min(Math.max(t, 0), 1) * (VIRIDIS.length - 1);
  const i = Math.min(Math.floor(x), VIRIDIS.length - 2);
  const f = x - i;
  const [a, b] = [VIRIDIS[i], VIRIDIS[i + 1]];
  return `rgb(${a.map((v, k) => Math.round(v + (b[k] - v) * f)).join(",")})`;
}

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
export const esc = (text) => String(text).replace(/[&<>"']/g, (c) => ESCAPES[c]);

// An axis value as a label: a null radius is the unconstrained net (r = ∞).
export function axisLabel(axis, value) {
  if (value === null || value === undefined) return axis === "constraint.radius" ? "∞" : "null";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

// Three significant digits; exponent form for small and large values (a cell is about 7 characters wide).
export function cellText(v) {
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a < 1e-2 || a >= 1e4) return v.toExponential(2).replace(/e([+-])(\d)$/, "e$1$2");
  return String(Number(v.toPrecision(3)));
}

// The colour scale shared by all panels: t in [0, 1] for a value, and the colour bar's ticks.
export function colourScale(values, wantLog) {
  const finite = values.filter((v) => Number.isFinite(v));
  const log = wantLog && finite.length > 0 && finite.every((v) => v > 0);
  const f = log ? Math.log10 : (v) => v;
  let lo = finite.length ? Math.min(...finite.map(f)) : 0;
  let hi = finite.length ? Math.max(...finite.map(f)) : 1;
  if (hi === lo) { lo -= 0.5; hi += 0.5; }
  const t = (v) => (f(v) - lo) / (hi - lo);
  let ticks;
  if (log) {
    ticks = [];
    for (let d = Math.ceil(lo); d <= Math.floor(hi); d++) ticks.push(10 ** d);
    const step = Math.ceil(ticks.length / 6);
    ticks = ticks.filter((_, i) => i % step === 0);
    if (ticks.length < 3) ticks = Array.from({ length: 5 }, (_, i) => 10 ** (lo + ((hi - lo) * i) / 4));
  } else {
    ticks = Array.from({ length: 5 }, (_, i) => lo + ((hi - lo) * i) / 4);
  }
  return { log, t, ticks, possibleLog: finite.every((v) => v > 0) };
}

// Every k-th label, so that labels are at least `min` pixels apart.
const every = (size, min) => Math.max(1, Math.ceil(min / size));

// What a cell's tooltip says: where it is, its value, and the config (over the other axes) that achieved it.
function tipFor(summary, k, i, j) {
  const { rows, cols, split, metric } = summary;
  const cell = summary.panels[k].cells[i][j];
  const where = [[rows.axis, cell.row], ...(cols ? [[cols.axis, cell.col]] : []),
    ...(split ? [[split.axis, summary.panels[k].split]] : [])].map(([a, v]) => `${a} = ${axisLabel(a, v)}`).join(", ");
  if (cell.value === null || cell.value === undefined) {
    return `${where}\nno value: ${cell.succeeded} of ${cell.configs} configs succeeded`;
  }
  const others = Object.entries(cell.params ?? {})
    .filter(([a]) => a !== rows.axis && a !== cols?.axis && a !== split?.axis)
    .map(([a, v]) => `${a} = ${axisLabel(a, v)}`).join(", ");
  return `${where}\n${summary.reduce} ${metric} = ${cell.value}\n`
    + `best of ${cell.succeeded} succeeded / ${cell.configs} configs${others ? ` (at ${others})` : ""}\nclick: open its job`;
}

function panelSvg(summary, panel, k, scale, layout) {
  const { rows, cols, split, metric } = summary;
  const { cellW, cellH, left, top, showNumbers } = layout;
  const nCols = panel.cells[0]?.length ?? 0;
  const nRows = panel.cells.length;
  const width = left + nCols * cellW + 8;
  const height = top + nRows * cellH + 44;
  const out = [];
  const title = split ? `${split.axis} = ${axisLabel(split.axis, panel.split)}` : "";
  out.push(`<svg class="panel" xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" `
    + `viewBox="0 0 ${width} ${height}" data-p="${k}" data-split="${esc(axisLabel(split?.axis, panel.split))}" `
    + `role="img" aria-label="${esc(title || metric)}">`);
  if (title) out.push(`<text class="panel-title" x="${left + (nCols * cellW) / 2}" y="16" text-anchor="middle">${esc(title)}</text>`);
  const rowStep = every(cellH, 14);
  const w = cellW - 1;
  const h = cellH - 1;
  panel.cells.forEach((line, i) => {
    const y = top + i * cellH;
    if (i % rowStep === 0) {
      out.push(`<text class="tick" x="${left - 6}" y="${y + cellH / 2}" text-anchor="end" dominant-baseline="central">`
        + `${esc(axisLabel(rows.axis, rows.values[i]))}</text>`);
    }
    line.forEach((cell, j) => {
      const x = left + j * cellW;
      const has = cell.value !== null && cell.value !== undefined;
      const t = has ? scale.t(cell.value) : 0;
      const rect = `<rect x="${x}" y="${y}" width="${w}" height="${h}" fill="${has ? viridis(t) : "#eceff3"}"/>`;
      const text = showNumbers
        ? `<text x="${x + w / 2}" y="${y + h / 2}" text-anchor="middle" dominant-baseline="central" `
          + `class="${has ? (t > 0.62 ? "dark" : "light") : "none"}">${has ? cellText(cell.value) : "–"}</text>`
        : "";
      if (has && cell.job_id) {
        out.push(`<a class="cell" href="/ui/jobs/${esc(cell.job_id)}" data-job-id="${esc(cell.job_id)}" `
          + `data-value="${cell.value}" data-r="${i}" data-c="${j}">${rect}${text}</a>`);
      } else {
        out.push(`<g class="cell empty" data-r="${i}" data-c="${j}">${rect}${text}</g>`);
      }
    });
  });
  const bottom = top + nRows * cellH;
  if (cols) {
    const colStep = every(cellW, 44);
    for (let j = 0; j < nCols; j += colStep) {
      out.push(`<text class="tick" x="${left + j * cellW + cellW / 2}" y="${bottom + 14}" text-anchor="middle">`
        + `${esc(axisLabel(cols.axis, cols.values[j]))}</text>`);
    }
    out.push(`<text class="axis-title" x="${left + (nCols * cellW) / 2}" y="${bottom + 34}" text-anchor="middle">${esc(cols.axis)}</text>`);
  }
  out.push(`<text class="axis-title" transform="translate(12 ${top + (nRows * cellH) / 2}) rotate(-90)" `
    + `text-anchor="middle">${esc(rows.axis)}</text>`);
  out.push("</svg>");
  return out.join("");
}

// A decade on a log bar reads 1e-6 (and 1, 10, 100 near one); anything else as a cell does.
function tickText(v, log) {
  const d = Math.log10(v);
  if (log && Math.abs(d - Math.round(d)) < 1e-9) return Math.abs(d) <= 2 ? String(10 ** Math.round(d)) : `1e${Math.round(d)}`;
  return cellText(v);
}

function colourBarSvg(scale, height, metric) {
  const barH = Math.max(80, Math.min(height - 40, 260));
  const stops = Array.from({ length: 9 }, (_, i) => `<stop offset="${i / 8}" stop-color="${viridis(1 - i / 8)}"/>`).join("");
  const out = [`<svg class="colour-bar" xmlns="http://www.w3.org/2000/svg" width="150" height="${barH + 40}" `
    + `data-scale="${scale.log ? "log" : "linear"}">`,
  `<defs><linearGradient id="heatmap-gradient" x1="0" y1="0" x2="0" y2="1">${stops}</linearGradient></defs>`,
  `<rect x="8" y="26" width="16" height="${barH}" fill="url(#heatmap-gradient)"/>`,
  `<text class="tick" x="8" y="14">${esc(metric)} (${scale.log ? "log" : "linear"})</text>`];
  for (const v of scale.ticks) {
    const y = 26 + barH * (1 - scale.t(v));
    out.push(`<line x1="24" x2="28" y1="${y}" y2="${y}" stroke="#5f6b7a"/>`
      + `<text class="tick" x="31" y="${y}" dominant-baseline="central">${tickText(v, scale.log)}</text>`);
  }
  out.push("</svg>");
  return out.join("");
}

// One tooltip for all cells (a <title> per cell would add 2,500 nodes to a 50 x 50 grid), following the pointer.
const shown = new WeakMap();
function followTips(el, summary) {
  const first = !shown.has(el);
  shown.set(el, summary);
  if (!first) return;
  el.addEventListener("pointermove", (event) => {
    const tip = el.querySelector(".heatmap-tip");
    const cell = event.target.closest?.(".cell");
    if (!tip) return;
    if (!cell) { tip.hidden = true; return; }
    const k = Number(cell.closest("svg.panel").dataset.p);
    tip.textContent = tipFor(shown.get(el), k, Number(cell.dataset.r), Number(cell.dataset.c));
    tip.hidden = false;
    // Fixed to the viewport, so the scrolling container does not clip it (CSSOM, which the CSP allows).
    const right = event.clientX + 14 + tip.offsetWidth > window.innerWidth;
    tip.style.left = `${right ? event.clientX - 14 - tip.offsetWidth : event.clientX + 14}px`;
    tip.style.top = `${event.clientY + 14}px`;
  });
  el.addEventListener("pointerleave", () => { const tip = el.querySelector(".heatmap-tip"); if (tip) tip.hidden = true; });
}

// Draw `summary` into `el` (replacing what was there); returns how many cells carry a value.
export function drawHeatmap(el, summary, { log = true } = {}) {
  const values = summary.panels.flatMap((p) => p.cells.flatMap((line) => line.map((c) => c.value)))
    .filter((v) => v !== null && v !== undefined);
  const scale = colourScale(values, log);
  const nRows = summary.rows.values.length;
  const nCols = summary.cols ? summary.cols.values.length : 1;
  const nPanels = summary.panels.length;
  const longest = Math.max(...summary.rows.values.map((v) => axisLabel(summary.rows.axis, v).length), 1);
  const left = 30 + Math.min(longest, 16) * 7.2;
  const top = summary.split ? 28 : 8;
  const avail = Math.max(320, el.clientWidth - 170);  // the colour bar (150) and the gap before it
  // Side by side (regimes next to each other, as in Figure 4) while cells stay at least 8 px wide.
  let perLine = nPanels;
  const fit = (n) => Math.floor(((avail - 20 * (n - 1)) / n - left - 10) / nCols);  // 20: the gap between panels
  let cellW = fit(perLine);
  if (cellW < 8 && nPanels > 1) { perLine = 1; cellW = fit(1); }
  cellW = Math.max(4, Math.min(cellW, 120));
  const showNumbers = cellW >= 46;
  const cellH = showNumbers ? Math.max(24, Math.min(Math.round(cellW * 0.4), 44)) : Math.max(4, Math.min(cellW, 24));
  const layout = { cellW, cellH, left, top, showNumbers };
  const panels = summary.panels.map((panel, k) => panelSvg(summary, panel, k, scale, layout)).join("");
  el.innerHTML = `<div class="panels">${panels}</div>${values.length ? colourBarSvg(scale, top + nRows * cellH, summary.metric) : ""}`
    + '<div class="heatmap-tip" role="tooltip" hidden></div>';
  followTips(el, summary);
  el.dataset.panels = String(nPanels);
  el.dataset.cells = String(values.length);
  el.dataset.scale = scale.log ? "log" : "linear";
  return { cells: values.length, log: scale.log, possibleLog: scale.possibleLog, showNumbers };
}
