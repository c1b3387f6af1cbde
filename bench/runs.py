"""Running a reproduction's job specs: in this process (trainer.loop.train), or as jobs of a running narrownet
service (narrownet.client, POST /v1/jobs), which is how a CUDA worker runs them.

Both paths return the same RunResult per spec. Jobs are submitted with an Idempotency-Key made from the spec, so
running the same command again attaches to the jobs already submitted instead of training them twice.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trainer.data import Dataset, load_data
from trainer.loop import TrainingDiverged, train
from trainer.spec import JobSpec


@dataclass
class RunResult:
    name: str
    spec: dict[str, Any]
    status: str  # succeeded, failed (diverged included) or cancelled
    final: dict[str, float]
    history: list[dict[str, float]]  # every recorded step: {"step": s, metric: value, ...}
    seconds: float
    job_id: str | None = None
    error: str | None = None
    tags: dict[str, Any] = field(default_factory=dict)  # what the script groups by (width, cell, seed, ...)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


Planned = tuple[JobSpec, dict[str, Any]]  # a spec and its tags


def idempotency_key(spec: JobSpec) -> str:
    digest = hashlib.sha256(json.dumps(spec.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()
    return f"repro-{digest[:40]}"


def run_local(planned: list[Planned], *, data_dir: Path | None = None,
              on_result: Callable[[RunResult], None] | None = None) -> list[RunResult]:
    """Train every spec here, one after the other; data sets are loaded once per distinct data spec."""
    cache: dict[str, Dataset] = {}
    results = []
    for spec, tags in planned:
        key = spec.data.model_dump_json()
        if key not in cache:
            cache[key] = load_data(spec.data, data_dir=data_dir)
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            try:
                out = train(spec, Path(tmp), data=cache[key])
                result = RunResult(spec.name, spec.model_dump(mode="json"), "succeeded", out.final_metrics,
                                   out.history, time.perf_counter() - start, tags=tags)
            except TrainingDiverged as exc:
                result = RunResult(spec.name, spec.model_dump(mode="json"), "failed", {}, [],
                                   time.perf_counter() - start, error=str(exc), tags=tags)
        results.append(result)
        if on_result:
            on_result(result)
    return results


def run_service(planned: list[Planned], url: str, key: str | None, *, timeout: float, poll: float = 5.0,
                on_result: Callable[[RunResult], None] | None = None) -> list[RunResult]:
    """Submit every spec as a job, then wait for each and collect its final metrics and metric series."""
    from narrownet.client import NarrownetClient  # the service's client; local runs do not need it

    with NarrownetClient(url, key, timeout=60.0) as client:
        submitted = []
        for spec, tags in planned:
            job = client.submit(spec.model_dump(mode="json"), idempotency_key=idempotency_key(spec))
            print(f"  submitted {spec.name}: job {job['id']} on queue {job['queue']}", flush=True)
            submitted.append((spec, tags, job["id"]))
        deadline = time.monotonic() + timeout
        results = []
        for spec, tags, job_id in submitted:
            job = client.wait(job_id, timeout=max(1.0, deadline - time.monotonic()), poll_interval=poll)
            history = _series(client, job_id)
            seconds = _seconds(job)
            result = RunResult(spec.name, spec.model_dump(mode="json"), job["status"], job["final_metrics"] or {},
                               history, seconds, job_id=job_id, error=job["error"], tags=tags)
            results.append(result)
            if on_result:
                on_result(result)
    return results


def _series(client: Any, job_id: str) -> list[dict[str, float]]:
    """Every stored metric point, page by page."""
    points: list[dict[str, float]] = []
    since: int | None = None
    while True:
        page = client.metrics(job_id, since_step=since)
        points += [{"step": p["step"], **p["values"]} for p in page["points"]]
        if not page["points"] or page.get("next_since_step") is None:
            return points
        since = page["next_since_step"]


def _seconds(job: dict[str, Any]) -> float:
    from datetime import datetime

    if not job.get("started_at") or not job.get("finished_at"):
        return 0.0
    started, finished = (datetime.fromisoformat(job[k].replace("Z", "+00:00")) for k in ("started_at", "finished_at"))
    return (finished - started).total_seconds()


def add_arguments(parser: Any, default_name: str) -> None:
    """The options every deep reproduction takes: where to run, where the data is, where results go."""
    parser.add_argument("--smoke", action="store_true", help="a few batches of the data, 1-2 epochs (the tests)")
    parser.add_argument("--url", help="submit the runs as jobs to the narrownet service at this URL instead of "
                                      "training here (its workers need the data under their NARROWNET_DATA_DIR)")
    parser.add_argument("--key", help="API key for --url (default: NARROWNET_API_KEY)")
    parser.add_argument("--data-dir", type=Path, help="local runs: the directory holding cifar-10-batches-py/ "
                                                      "(default: NARROWNET_DATA_DIR)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None,
                        help="the specs' device (default auto; --smoke: cpu). With --url, cuda routes every run to "
                             "the service's gpu queue")
    parser.add_argument("--seeds", default=None, help="init seeds, comma-separated (default 0)")
    parser.add_argument("--timeout", type=float, default=7 * 24 * 3600.0, help="--url: seconds to wait for all jobs")
    parser.add_argument("--estimate", action="store_true",
                        help="measure one training step per configuration on --device (default cpu) and write the "
                             "expected GPU time of the full runs; trains nothing")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for local runs and --estimate")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--name", default=None, help=f"output file stem (default {default_name}, "
                                                     f"{default_name}.smoke or {default_name}.estimate)")


def execute(planned: list[Planned], args: Any) -> list[RunResult]:
    """Run the planned specs here or through the service, printing one line per finished run."""
    from core.settings import Settings  # the one settings object: NARROWNET_DATA_DIR, _URL, _API_KEY

    settings = Settings()

    def show(r: RunResult) -> None:
        f = r.final
        acc = " ".join(f"{k} {f[k]:.4f}" for k in ("train_accuracy", "test_accuracy") if k in f)
        print(f"  {r.name}: {r.status} {acc} ({r.seconds:.0f} s)" + (f" {r.error}" if r.error else ""), flush=True)

    if args.url:
        return run_service(planned, args.url, args.key or settings.api_key, timeout=args.timeout, on_result=show)
    return run_local(planned, data_dir=args.data_dir or settings.data_dir, on_result=show)


def estimate_device(args: Any) -> Any:
    """The device --estimate measures on: --device when it names one, else the CPU."""
    import torch

    return torch.device(args.device if args.device in ("cpu", "cuda") else "cpu")


def write_estimate(args: Any, command: str, setting: Any, estimated: dict[str, Any], default_name: str,
                   row_line: Callable[[dict[str, Any]], str]) -> None:
    """--estimate: NAME.json holds the command, the setting and the estimate; one printed line per row."""
    name = args.name or default_name
    report = {"command": command.strip(), "setting": asdict(setting), "threads": args.threads, **estimated}
    (args.out / f"{name}.json").write_text(json.dumps(report, indent=1))
    for row in report["rows"]:
        print(row_line(row))
    print(f"total: {report['total_gpu_hours']:.2f} GPU hours; written to {args.out / name}.json")


def run_and_record(planned: list[Planned], args: Any, command: str, setting: Any,
                   name: str) -> tuple[list[RunResult], dict[str, Any]]:
    """Execute the runs and write NAME.json (command, setting, wall time, versions, every run's result)."""
    import torch

    start = time.perf_counter()
    results = execute(planned, args)
    report = {"command": command.strip(), "setting": asdict(setting), "wall_seconds": time.perf_counter() - start,
              "torch": torch.__version__, "machine": platform.machine(), "via": args.url or "local",
              "runs": [r.as_dict() for r in results]}
    (args.out / f"{name}.json").write_text(json.dumps(report, indent=1))
    return results, report


def seeds_of(args: Any) -> tuple[int, ...]:
    return tuple(int(x) for x in args.seeds.split(",")) if args.seeds else (0,)


def exit_code(results: list[RunResult]) -> int:
    """1 when a run failed for another reason than divergence (missing data, a crash): the command did not do its
    job. A diverged run is a result, reported in the tables."""
    broken = [r for r in results if r.status != "succeeded" and "diverged" not in (r.error or "")]
    for r in broken:
        print(f"  {r.name}: {r.status}: {r.error}", file=sys.stderr)
    return 1 if broken else 0
