// A uPlot chart for live series: log-y toggle, CSV (full resolution) and PNG export, zoom that live updates
// never reset, hidden series and scales kept across updates and rebuilds, view state reported for the URL.
//
// uPlot itself decimates per pixel column when drawing (min/max of the points in each column), so a chart
// handed 100k points draws every spike without a random sample.

import { csvBlob, download } from "./api.js";

const uPlot = globalThis.uPlot;
const HEIGHT = 280;

export class LiveChart {
  // el: the element the chart goes in (its data-points attribute says how many points it holds).
  // series: [{label, stroke, dash?, width?}]; xLabel/yLabel: axis titles; logY: start on a log scale.
  // onView({logY, x: [min, max] | null, hidden: [labels]}): the view changed (for the URL).
  // csv(): optional full-resolution export ({header, rows}) when the chart holds reduced data.
  constructor(el, { name, series, xLabel = "step", yLabel = "", logY = false, view = {}, onView, csv }) {
    this.el = el;
    this.name = name;
    this.seriesOpts = series;
    this.xLabel = xLabel;
    this.yLabel = yLabel;
    this.logY = logY;
    this.onView = onView ?? (() => {});
    this.csv = csv;
    this.hidden = new Set(view.hidden ?? []);
    this.pendingX = view.x ?? null;  // a zoom from the URL, applied once there is data
    this.zoomed = false;
    this.data = [[], ...series.map(() => [])];
    this.toolbar();
    this.build();
    this.observer = new ResizeObserver(() => this.plot.setSize(this.size()));
    this.observer.observe(el);
  }

  destroy() {
    this.observer.disconnect();
    this.bar.remove();
    this.plot.destroy();
  }

  size() {
    return { width: Math.max(300, this.el.clientWidth), height: HEIGHT };
  }

  toolbar() {
    const bar = document.createElement("div");
    bar.className = "chart-tools";
    bar.innerHTML = `<label><input type="checkbox" data-testid="log-y"> log y</label>
      <button type="button" data-testid="reset-zoom">reset zoom</button>
      <button type="button" data-testid="export-csv">CSV</button>
      <button type="button" data-testid="export-png">PNG</button>`;
    const log = bar.querySelector('[data-testid="log-y"]');
    log.checked = this.logY;
    log.addEventListener("change", () => { this.logY = log.checked; this.build(); this.report(); });
    bar.querySelector('[data-testid="reset-zoom"]').addEventListener("click", () => this.resetZoom());
    bar.querySelector('[data-testid="export-csv"]').addEventListener("click", () => this.exportCsv());
    bar.querySelector('[data-testid="export-png"]').addEventListener("click", () => this.exportPng());
    this.el.before(bar);
    this.bar = bar;
  }

  // What uPlot draws: on a log scale, values <= 0 have no place and become gaps.
  shown() {
    if (!this.logY) return this.data;
    return [this.data[0], ...this.data.slice(1).map((ys) => ys.map((v) => (v > 0 ? v : null)))];
  }

  build() {
    const x = this.plot && this.zoomed ? [this.plot.scales.x.min, this.plot.scales.x.max] : null;
    if (this.plot) this.plot.destroy();
    const many = this.seriesOpts.length > 40;
    const opts = {
      ...this.size(),
      scales: { x: { time: false }, y: { distr: this.logY ? 3 : 1 } },
      axes: [{ label: this.xLabel }, { label: this.yLabel, size: 70 }],
      legend: { live: !many },
      cursor: { drag: { x: true, y: false, setScale: true } },
      series: [{ label: this.xLabel }, ...this.seriesOpts.map((s) => ({
        label: s.label, stroke: s.stroke, width: s.width ?? 1.5, dash: s.dash, spanGaps: true,
        show: !this.hidden.has(s.label), points: { show: false },
      }))],
      hooks: {
        // Zoomed = the x axis shows less than all the data (a drag zooms; a double-click or reset shows all).
        setScale: [(u, key) => {
          if (key !== "x") return;
          const xs = this.data[0];
          this.zoomed = xs.length > 1 && (u.scales.x.min > xs[0] || u.scales.x.max < xs[xs.length - 1]);
          this.report();
        }],
        setSeries: [(u, i) => {
          if (i === null) return;
          const label = this.seriesOpts[i - 1].label;
          if (u.series[i].show) this.hidden.delete(label); else this.hidden.add(label);
          this.report();
        }],
      },
    };
    this.plot = new uPlot(opts, this.shown(), this.el);
    if (x) this.plot.setScale("x", { min: x[0], max: x[1] });
    this.el.dataset.logY = this.logY ? "1" : "0";
  }

  report() {
    if (!this.plot) return;
    const s = this.plot.scales.x;
    this.onView({ logY: this.logY, x: this.zoomed ? [s.min, s.max] : null, hidden: [...this.hidden] });
  }

  // Replace the data (same series). A zoomed chart keeps its axes; otherwise the axes follow the data.
  setData(data) {
    this.data = data;
    this.el.dataset.points = String(data[0].length);
    if (this.pendingX && data[0].length) {
      this.plot.setData(this.shown(), false);
      this.plot.setScale("x", { min: this.pendingX[0], max: this.pendingX[1] });
      this.pendingX = null;
      return;
    }
    this.plot.setData(this.shown(), !this.zoomed);
  }

  resetZoom() {
    this.zoomed = false;
    this.plot.setData(this.shown(), true);
    this.report();
  }

  async exportCsv() {
    const { header, rows } = this.csv ? await this.csv() : {
      header: [this.xLabel, ...this.seriesOpts.map((s) => s.label)],
      rows: this.data[0].map((x, i) => [x, ...this.data.slice(1).map((ys) => ys[i])]),
    };
    download(`${this.name}.csv`, csvBlob(header, rows));
  }

  exportPng() {
    const source = this.plot.ctx.canvas;
    const canvas = document.createElement("canvas");
    canvas.width = source.width;
    canvas.height = source.height;
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.drawImage(source, 0, 0);
    canvas.toBlob((blob) => download(`${this.name}.png`, blob), "image/png");
  }
}

// Distinct colours within a regime: regular runs in blues, constrained runs in oranges.
export function regimeColour(regime, index, count) {
  const light = count <= 1 ? 45 : 30 + Math.round((35 * index) / (count - 1));
  return regime === "constrained" ? `hsl(24, 90%, ${light}%)` : `hsl(212, 75%, ${light}%)`;
}
