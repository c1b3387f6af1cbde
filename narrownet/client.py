"""A small httpx client for the narrownet API (used by the CLI, the tests and the benchmark)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from httpx_sse import ServerSentEvent, connect_sse

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
SHA256_HEADER = "X-Checkpoint-SHA256"


class ApiError(Exception):
    """An error answer from the API, in its one JSON error shape."""

    def __init__(self, status_code: int, code: str, message: str, fields: list[dict[str, str]] | None = None):
        self.status_code = status_code
        self.code = code
        self.message = message
        self.fields = fields or []
        detail = "; ".join(f"{f.get('field')}: {f.get('reason')}" for f in self.fields)
        # A validation message already lists its fields; say each reason once.
        extra = f" ({detail})" if detail and detail != message else ""
        super().__init__(f"{status_code} {code}: {message}{extra}")

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        try:
            error = response.json()["error"]
            return cls(response.status_code, error.get("code", "error"), error.get("message", ""),
                       error.get("fields"))
        except (ValueError, KeyError, TypeError):
            return cls(response.status_code, "http_error", response.text[:500])


class NoApiKey(Exception):
    """The API asked for a key and none was configured."""

    def __init__(self) -> None:
        super().__init__("no API key: set NARROWNET_API_KEY or pass --key (`make serve` prints one; "
                         "`narrownet keys create NAME` makes another)")


class AmbiguousId(Exception):
    """A short id matched no job, or more than one."""


class ChecksumMismatch(Exception):
    """A downloaded checkpoint does not hash to the sha256 the server announced."""


def _seg(value: str) -> str:
    # Ids go into the path as one segment: "../x" or "a/b" must not address another route.
    return quote(value, safe="")


def _poll(fetch: Callable[[], dict[str, Any]], what: str, timeout: float, poll_interval: float,
          on_update: Callable[[dict[str, Any]], None] | None) -> dict[str, Any]:
    """Fetch until the answer's status is terminal; raise TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        current = fetch()
        if on_update is not None:
            on_update(current)
        if current["status"] in TERMINAL:
            return current
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} still {current['status']} after {timeout:.0f}s")
        time.sleep(poll_interval)


class NarrownetClient:
    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.has_key = bool(api_key)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        limits = httpx.Timeout(timeout, connect=min(timeout, 10.0))
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=limits,
                                  transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> NarrownetClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self._http.request(method, path, **kwargs)
        if response.status_code == 401 and not self.has_key:
            raise NoApiKey()
        if response.status_code >= 400:
            raise ApiError.from_response(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self._request(method, path, **kwargs)
        body = response.json()
        if not isinstance(body, dict):
            raise ApiError(response.status_code, "unexpected_answer", f"expected a JSON object, got {body!r:.200}")
        return body

    # ------------------------------------------------------------------------------------------- health
    def healthz(self) -> dict[str, Any]:
        return self._json("GET", "/healthz")

    def readyz(self) -> dict[str, Any]:
        return self._json("GET", "/readyz")

    # --------------------------------------------------------------------------------------------- jobs
    def submit(self, spec: dict[str, Any], *, idempotency_key: str | None = None,
               reuse: bool = False) -> dict[str, Any]:
        """POST /v1/jobs. reuse: get back your succeeded job of the same spec_hash instead of training again,
        when there is one; the answer then carries `"reused": true` (the server's header Reused: true)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        if reuse:
            headers["Reuse"] = "succeeded"
        response = self._request("POST", "/v1/jobs", json=spec, headers=headers)
        body: dict[str, Any] = response.json()
        if response.headers.get("Reused") == "true":
            body["reused"] = True
        return body

    def plan(self, spec: dict[str, Any], *, reuse: bool = False) -> dict[str, Any]:
        """POST /v1/plan: a job spec's counts, queue and estimated run time, or a sweep's (a body with "grid"):
        each config's plan, totals, packs and why configs train apart; reuse: leave out the configs you already
        trained, as a submit with reuse would. Nothing is queued."""
        return self._json("POST", "/v1/plan", json=spec, headers={"Reuse": "succeeded"} if reuse else {})

    def resolve_job_id(self, id_or_prefix: str) -> str:
        """The full id of the one job whose id starts with `id_or_prefix` (like git's short hashes)."""
        if len(id_or_prefix) == 32:
            return id_or_prefix
        page = self.jobs(id_prefix=id_or_prefix, limit=10)
        ids = [job["id"] for job in page["items"]]
        if len(ids) == 1:
            return str(ids[0])
        if not ids:
            raise AmbiguousId(f"no job id starts with {id_or_prefix!r}")
        more = f" and {page['total'] - len(ids)} more" if page["total"] > len(ids) else ""
        raise AmbiguousId(f"{id_or_prefix!r} matches {page['total']} jobs: {', '.join(ids)}{more}; "
                          "give more characters")

    def job(self, job_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/jobs/{_seg(job_id)}")

    def jobs(self, **filters: Any) -> dict[str, Any]:
        """GET /v1/jobs; filters: status, regime, name, id_prefix, spec_hash and the pagination parameters."""
        return self._json("GET", "/v1/jobs", params={k: v for k, v in filters.items() if v is not None})

    def metrics(self, job_id: str, *, since_step: int | None = None,
                every: int | None = None) -> dict[str, Any]:
        params = {k: v for k, v in {"since_step": since_step, "every": every}.items() if v is not None}
        return self._json("GET", f"/v1/jobs/{_seg(job_id)}/metrics", params=params)

    def series(self, job_ids: str, **params: Any) -> dict[str, Any]:
        """GET /v1/series: one metric (`metric=`) of the comma-separated jobs, `points=` to reduce each."""
        return self._json("GET", "/v1/series", params={"job_ids": job_ids, **params})

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._json("POST", f"/v1/jobs/{_seg(job_id)}/cancel")

    def checkpoint_meta(self, job_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/jobs/{_seg(job_id)}/checkpoint/meta")

    def fetch_checkpoint(self, job_id: str, dest: Path) -> str:
        """Stream the checkpoint to `dest` (atomically) and return its sha256, checked against the header."""
        dest = Path(dest)
        partial = dest.with_name(dest.name + ".part")
        digest = hashlib.sha256()
        with self._http.stream("GET", f"/v1/jobs/{_seg(job_id)}/checkpoint") as response:
            if response.status_code >= 400:
                response.read()
                raise ApiError.from_response(response)
            announced = response.headers.get(SHA256_HEADER)
            if not announced:
                raise ChecksumMismatch(f"the server sent no {SHA256_HEADER} header")
            with partial.open("wb") as out:
                for chunk in response.iter_bytes():
                    digest.update(chunk)
                    out.write(chunk)
        if digest.hexdigest() != announced.lower():
            partial.unlink(missing_ok=True)
            raise ChecksumMismatch(f"checkpoint sha256 {digest.hexdigest()} != announced {announced}")
        partial.replace(dest)
        return digest.hexdigest()

    def events(self, job_id: str, *, last_event_id: int | None = None) -> Iterator[ServerSentEvent]:
        """The job's server-sent events (`status`, `metrics`) from after `last_event_id`, until the server ends
        the stream (the job ended) or the connection drops (httpx.TransportError)."""
        headers = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
        # The server sends at least a heartbeat comment every ~15 s; a minute of silence is a dead connection.
        timeout = httpx.Timeout(60.0, connect=10.0)
        with connect_sse(self._http, "GET", f"/v1/jobs/{_seg(job_id)}/events", headers=headers,
                         timeout=timeout) as source:
            if source.response.status_code >= 400:
                source.response.read()
                raise ApiError.from_response(source.response)
            yield from source.iter_sse()

    def follow(self, job_id: str, *, timeout: float = 3600.0, on_update: Callable[[dict[str, Any]], None] | None = None,
               on_points: Callable[[list[dict[str, Any]]], None] | None = None,
               reconnect_delay: float = 1.0) -> dict[str, Any]:
        """Follow the job over its event stream until it is terminal and return it; a dropped connection is
        resumed after the last step received (Last-Event-ID), so no point is missed or repeated."""
        deadline = time.monotonic() + timeout
        last_step: int | None = None
        while True:
            try:
                for event in self.events(job_id, last_event_id=last_step):
                    if event.event == "metrics":
                        last_step = int(event.id)
                        if on_points is not None:
                            on_points(event.json()["points"])
                    elif event.event == "status":
                        job: dict[str, Any] = event.json()
                        if on_update is not None:
                            on_update(job)
                        if job["status"] in TERMINAL:
                            return job
                    if time.monotonic() >= deadline:
                        raise TimeoutError(f"job {job_id} still not finished after {timeout:.0f}s")
            except httpx.TransportError:
                if time.monotonic() >= deadline:
                    raise
            # The stream ended or dropped before the job did (a server restart): resume it.
            time.sleep(reconnect_delay)

    def wait(self, job_id: str, *, timeout: float = 3600.0, poll_interval: float = 1.0,
             on_update: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Poll until the job is terminal; raise TimeoutError after `timeout` seconds."""
        return _poll(lambda: self.job(job_id), f"job {job_id}", timeout, poll_interval, on_update)

    # ------------------------------------------------------------------------------------------- sweeps
    def submit_sweep(self, sweep: dict[str, Any], *, idempotency_key: str | None = None, reuse: bool = False,
                     dry_run: bool = False) -> dict[str, Any]:
        """POST /v1/sweeps: {"name", "base": job spec, "grid": {dotted path: [values]}, "objective"}. reuse: configs
        whose spec_hash matches one of your succeeded jobs point at it (`reused_from`) and only the rest train;
        dry_run: answer with the sweep's plan (as plan()) and queue nothing."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        if reuse:
            headers["Reuse"] = "succeeded"
        params = {"dry_run": "true"} if dry_run else None
        return self._json("POST", "/v1/sweeps", json=sweep, headers=headers, params=params)

    def sweep(self, sweep_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/sweeps/{_seg(sweep_id)}")

    def sweeps(self, **params: Any) -> dict[str, Any]:
        return self._json("GET", "/v1/sweeps", params={k: v for k, v in params.items() if v is not None})

    def cancel_sweep(self, sweep_id: str) -> dict[str, Any]:
        return self._json("POST", f"/v1/sweeps/{_seg(sweep_id)}/cancel")

    def sweep_results(self, sweep_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/sweeps/{_seg(sweep_id)}/results")

    def sweep_results_csv(self, sweep_id: str) -> str:
        return self._request("GET", f"/v1/sweeps/{_seg(sweep_id)}/results", params={"format": "csv"}).text

    def sweep_summary(self, sweep_id: str, **params: Any) -> dict[str, Any]:
        """The Figure-4 table; params: rows, cols, split (grid axes), metric, reduce (min|max)."""
        return self._json("GET", f"/v1/sweeps/{_seg(sweep_id)}/summary",
                          params={k: v for k, v in params.items() if v is not None})

    def sweep_heatmap(self, sweep_id: str, dest: Path, *, fmt: str = "png", **params: Any) -> Path:
        """Write the summary's heatmap (png or svg) to dest."""
        response = self._request("GET", f"/v1/sweeps/{_seg(sweep_id)}/heatmap.{fmt}",
                                 params={k: v for k, v in params.items() if v is not None})
        Path(dest).write_bytes(response.content)
        return Path(dest)

    def wait_sweep(self, sweep_id: str, *, timeout: float = 3600.0, poll_interval: float = 1.0,
                   on_update: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Poll until every config of the sweep is finished; raise TimeoutError after `timeout` seconds."""
        return _poll(lambda: self.sweep(sweep_id), f"sweep {sweep_id}", timeout, poll_interval, on_update)

    # ----------------------------------------------------------------------------------------- datasets
    def upload_dataset(self, path: Path, *, name: str | None = None) -> dict[str, Any]:
        path = Path(path)
        with path.open("rb") as f:
            files = {"file": (path.name, f, "application/octet-stream")}
            data = {"name": name} if name else {}
            return self._json("POST", "/v1/datasets", files=files, data=data)

    def datasets(self, **params: Any) -> dict[str, Any]:
        return self._json("GET", "/v1/datasets", params={k: v for k, v in params.items() if v is not None})

    def dataset(self, dataset_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/datasets/{_seg(dataset_id)}")
