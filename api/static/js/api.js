// The JSON API from a signed-in page: the session cookie goes along (same origin) and every state change
// carries the page's CSRF token, as the API requires of cookie-authenticated requests.

const csrfToken = () => document.querySelector('meta[name="csrf-token"]')?.content ?? "";

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message ?? `HTTP ${status}`);
    this.status = status;
    this.code = body?.error?.code;
  }
}

export async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRF-Token"] = csrfToken();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => null);
  if (response.status === 401) {  // the session ran out: sign in again, then come back here
    location.assign(`/ui/login?next=${encodeURIComponent(location.pathname + location.search)}`);
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

// Say what the live connection is doing, in the page's [data-testid=live-state] element.
export function liveState(text, state) {
  const el = document.querySelector('[data-testid="live-state"]');
  if (el) { el.textContent = text; el.dataset.state = state; }
}

// Refresh a list page every `ms` while it is visible, saying in the live-state element whether the last try worked.
export function refreshLive(refresh, ms) {
  async function loop() {
    if (document.visibilityState === "visible") {
      try {
        await refresh();
        liveState("live", "live");
      } catch (error) {
        liveState(`update failed (${error.message}); retrying`, "reconnecting");
      }
    }
    setTimeout(loop, ms);
  }
  liveState("live", "live");
  setTimeout(loop, ms);
}

// Read and write the view (filters, zoom, scales, hidden series) in the URL, so a reload or a shared link
// shows the same view; replaceState, so zooming does not flood the history.
export function viewParam(name) {
  return new URLSearchParams(location.search).get(name);
}

export function setViewParams(values) {
  const url = new URL(location.href);
  for (const [name, value] of Object.entries(values)) {
    if (value === null || value === undefined || value === "") url.searchParams.delete(name);
    else url.searchParams.set(name, value);
  }
  history.replaceState(null, "", url);
}

export function download(filename, blob) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

export function csvBlob(header, rows) {
  const cell = (v) => (v === null || v === undefined ? "" : /[",\n]/.test(String(v)) ? `"${String(v).replace(/"/g, '""')}"` : String(v));
  const lines = [header.map(cell).join(","), ...rows.map((row) => row.map(cell).join(","))];
  return new Blob([lines.join("\n") + "\n"], { type: "text/csv" });
}
