"""Where a small job's time goes in the worker: cProfile over worker.runner.run_job, in this process.

Creates N queued jobs (bench/bench_small_jobs.py's spec) the way the API does (api.services.jobs.submit_job,
nothing sent), then runs each with run_job, as the Celery task does, under cProfile; prints the time per job
spent in each step (cumulative: a step includes what it calls). Run:

    .venv/bin/python bench/profile_small_job.py [--jobs 30] [--database postgres|sqlite]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy.orm import sessionmaker  # noqa: E402

from api.services.jobs import submit_job  # noqa: E402
from api.services.keys import create_key  # noqa: E402
from bench.bench_small_jobs import SMALL_SPEC  # noqa: E402
from bench.bench_sweeps import postgres_database  # noqa: E402
from core.artifacts.store import store_for  # noqa: E402
from core.db.migrate import upgrade  # noqa: E402
from core.db.session import make_engine  # noqa: E402
from core.settings import Settings  # noqa: E402
from trainer.spec import JobSpec  # noqa: E402
from worker.runner import run_job  # noqa: E402

# (file suffix, function name) -> what the step is, in the order a job goes through them.
STEPS = [
    (("worker/runner.py", "run_job"), "run_job, all of it"),
    (("worker/runner.py", "claim"), "claim (transaction: UPDATE ... RETURNING; later attempts: their checkpoints)"),
    (("worker/job_store.py", "prepare_run_dir"), "prepare the run directory (against the claim's checkpoints)"),
    (("trainer/loop.py", "train_pack"), "train (includes the callbacks below)"),
    (("trainer/data/__init__.py", "load"), "  load the data"),
    (("worker/progress.py", "should_stop"), "  heartbeat / cancel checks"),
    (("worker/progress.py", "flush"), "  metric flushes (UPDATE job + INSERT points)"),
    (("trainer/checkpoint.py", "save_checkpoint"), "  checkpoint write (safetensors, sha256; the worker's: no fsync)"),
    (("trainer/files.py", "atomic_write"), "    of which atomic_write (temp, rename)"),
    (("worker/progress.py", "on_checkpoint"), "  checkpoint record of periodic checkpoints (publish + row)"),
    (("worker/job_store.py", "finish"), "finish (publish the final checkpoint; outcome, last points, its row, sample)"),
    (("worker/job_store.py", "publish_checkpoint"), "  publish to the store (2 files fsynced, 1 directory fsync)"),
    (("worker/throughput.py", "write"), "  of which the throughput sample (savepoint in finish's transaction)"),
    (("{built-in method posix.fsync}", ""), "all fsync calls"),
]


def step_seconds(stats: pstats.Stats) -> dict[str, float]:
    found: dict[str, float] = {}
    raw = stats.stats  # type: ignore[attr-defined]  # (file, line, name) -> (cc, nc, tt, ct, callers)
    for (path, _line, name), (_cc, _nc, _tt, ct, _callers) in raw.items():
        for (suffix, fn), label in STEPS:
            if (fn and path.endswith(suffix) and name == fn) or (not fn and name == suffix):
                found[label] = found.get(label, 0.0) + ct
    return found


def profile(n: int, database_url: str, home: Path) -> tuple[dict[str, float], pstats.Stats]:
    upgrade(database_url)
    settings = Settings(database_url=database_url, home=home)
    engine = make_engine(database_url)
    sessions = sessionmaker(bind=engine)
    artifacts = store_for(settings)
    spec = JobSpec.model_validate(SMALL_SPEC)
    ids = []
    with sessions.begin() as session:
        owner, _ = create_key(session, "profile")
        for _ in range(n + 1):
            ids.append(submit_job(session, owner, spec, idempotency_key=None, settings=settings,
                                  enqueue=lambda *_: None).job.id)
    run_job(ids[0], worker_id="profile:0:warmup", settings=settings, sessions=sessions, artifacts=artifacts)
    profiler = cProfile.Profile()
    profiler.enable()
    for i, job_id in enumerate(ids[1:]):
        status = run_job(job_id, worker_id=f"profile:0:{i}", settings=settings, sessions=sessions,
                         artifacts=artifacts)
        assert status is not None and status.value == "succeeded", (job_id, status)
    profiler.disable()
    engine.dispose()
    stats = pstats.Stats(profiler)
    return {k: v / n for k, v in step_seconds(stats).items()}, stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--database", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--top", type=int, default=0, help="also print cProfile's top N by cumulative time")
    args = parser.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="narrownet-profile-"))
    try:
        with ExitStack() as stack:
            url = (stack.enter_context(postgres_database()) if args.database == "postgres"
                   else f"sqlite:///{home / 'narrownet.db'}")
            per_job, stats = profile(args.jobs, url, home)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    print(f"run_job of {args.jobs} small jobs on {args.database}, ms per job (cumulative, under cProfile):\n")
    print("| step | ms per job |\n|---|---:|")
    for _, label in STEPS:
        if label in per_job:
            print(f"| {label} | {per_job[label] * 1000:.1f} |")
    if args.top:
        stats.sort_stats("cumulative").print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
