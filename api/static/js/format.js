// Number, duration and time formats shared by the pages; twins of the filters in api/pages.py, so a row the
// server rendered and a row a script updated read the same.

export function fmtNum(v) {
  if (typeof v !== "number" || !Number.isFinite(v)) return "–";
  if (v === 0) return "0";
  const a = Math.abs(v);
  return a < 1e-3 || a >= 1e5 ? v.toExponential(3) : String(Number(v.toPrecision(4)));
}

export function fmtEta(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.round(seconds);
  const pad = (n) => String(n).padStart(2, "0");
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${pad(s % 60)}s`;
  return `${Math.floor(s / 3600)}h ${pad(Math.floor((s % 3600) / 60))}m`;
}

export function fmtTime(iso) {
  if (!iso) return "–";
  return new Date(iso).toISOString().slice(0, 19).replace("T", " ");
}

export function modelSummary(spec) {
  const model = (spec && spec.model) || {};
  const arch = model.arch ?? "?";
  if (model.width !== undefined) return `${arch} m=${model.width}`;
  if (Array.isArray(model.hidden)) return `${arch} ${model.hidden.join("-")}`;
  if (model.block4_width !== undefined) return `${arch} w=${model.block4_width}`;
  return arch;
}

export const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
