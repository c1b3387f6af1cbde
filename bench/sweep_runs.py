"""Running a reproduction's sweep files (trainer/grid.py, the format of `narrownet sweep` and POST /v1/sweeps): here
(trainer.sweep.run_sweep), or as sweeps of a running narrownet service (narrownet.client).

Both paths return, per sweep, one ConfigRun per config in grid order, with the same numbers: a pack is the same
vectorized program on a worker as here. Sweeps are submitted with an Idempotency-Key made from the sweep file, so
running the same command again attaches to the sweeps already submitted instead of training them twice.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from trainer.grid import SweepFile


@dataclass
class ConfigRun:
    index: int
    params: dict[str, Any]  # grid axis -> value, as in the sweep file
    status: str  # succeeded | failed
    final: dict[str, float | None]  # final metrics (None: not finite); {} when the config failed
    loss_history: list[list[Any]]  # [[step, train_loss], ...] at every recorded step (up to a divergence)
    error: str | None = None
    job_id: str | None = None  # the service's job


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None  # JSON has no inf/NaN


def idempotency_key(sweep: SweepFile) -> str:
    body = json.dumps(sweep.model_dump(mode="json"), sort_keys=True)
    return f"repro-sweep-{hashlib.sha256(body.encode()).hexdigest()[:40]}"


def check(sweep: SweepFile, runs: Sequence[ConfigRun]) -> list[ConfigRun]:
    """A config that diverged is a result of the grid; one that ended for another reason means the run is broken."""
    broken = [r for r in runs if r.status != "succeeded" and "diverged" not in (r.error or "")]
    if broken:
        raise RuntimeError(f"sweep {sweep.sweep_name}: {len(broken)} config(s) did not finish: "
                           + "; ".join(f"#{r.index} {r.status}: {r.error}" for r in broken[:5]))
    return list(runs)


def run_here(sweeps: Sequence[SweepFile]) -> list[list[ConfigRun]]:
    """Train each sweep in this process, pack by pack (the caller sets torch's thread count)."""
    from trainer.sweep import run_sweep

    done = []
    for sweep in sweeps:
        result = run_sweep(sweep)
        done.append(check(sweep, [
            ConfigRun(r.index, r.params, r.status, {k: _finite(v) for k, v in (r.final_metrics or {}).items()},
                      [[int(h["step"]), _finite(h["train_loss"])] for h in r.history], r.error)
            for r in result.results]))
    return done


def run_on_service(sweeps: Sequence[SweepFile], url: str, key: str | None, *, timeout: float,
                   poll: float = 0.5) -> list[list[ConfigRun]]:
    """Submit every sweep (all at once, so the service's workers see them together), wait for each, and read back
    its results (GET /v1/sweeps/{id}/results) and its configs' loss series (GET /v1/series)."""
    from narrownet.client import NarrownetClient  # the service's client: local runs do not need it

    with NarrownetClient(url, key, timeout=60.0) as client:
        ids = [client.submit_sweep(s.model_dump(mode="json"), idempotency_key=idempotency_key(s))["id"]
               for s in sweeps]
        done = []
        for sweep, sweep_id in zip(sweeps, ids, strict=True):
            client.wait_sweep(sweep_id, timeout=timeout, poll_interval=poll)
            rows = sorted(client.sweep_results(sweep_id)["items"], key=lambda row: row["index"])
            series = _loss_series(client, [row["job_id"] for row in rows])
            done.append(check(sweep, [
                ConfigRun(row["index"], row["params"], row["status"], dict(row["final_metrics"] or {}),
                          [[step, _finite(v)] for step, v in zip(*series[row["job_id"]], strict=True)],
                          row.get("error"), row["job_id"])
                for row in rows]))
    return done


def _loss_series(client: Any, job_ids: list[str], per_request: int = 200) -> dict[str, tuple[list[int], list[Any]]]:
    """Every recorded training loss of these jobs, at full resolution, a few hundred jobs per request."""
    found: dict[str, tuple[list[int], list[Any]]] = {}
    for start in range(0, len(job_ids), per_request):
        page = client.series(",".join(job_ids[start:start + per_request]), metric="train_loss")
        found.update({s["job_id"]: (s["steps"], s["values"]) for s in page["series"]})
    return found


def final_metrics(runs: Sequence[ConfigRun]) -> list[dict[str, Any]]:
    """Each config's final metrics as a report entry holds them: a diverged config has the metrics its sweep's other
    configs report, all None (its training loss None is what the tables call "diverged"), and its error."""
    keys = list(dict.fromkeys(k for r in runs if r.status == "succeeded" for k in r.final)) or ["train_loss"]
    return [dict(r.final) if r.status == "succeeded" else {**dict.fromkeys(keys), "error": r.error} for r in runs]


@dataclass(frozen=True)
class Service:
    """Where --url sends the sweeps (picklable: rows run in worker processes)."""

    url: str
    key: str | None
    timeout: float


def run_sweeps(sweeps: Sequence[SweepFile], service: Service | None) -> list[list[ConfigRun]]:
    if service is None:
        return run_here(sweeps)
    return run_on_service(sweeps, service.url, service.key, timeout=service.timeout)


def add_service_arguments(parser: Any) -> None:
    parser.add_argument("--url", help="submit the grids as sweeps (POST /v1/sweeps) to the narrownet service at this "
                                      "URL instead of training here; the tables and figures are the same")
    parser.add_argument("--key", help="API key for --url (default: NARROWNET_API_KEY)")
    parser.add_argument("--timeout", type=float, default=24 * 3600.0, help="--url: seconds to wait for each sweep")


def service_of(args: Any) -> Service | None:
    if not args.url:
        return None
    from core.settings import Settings  # the one settings object: NARROWNET_API_KEY

    return Service(args.url, args.key or Settings().api_key, args.timeout)
