"""Chaos benchmark: submit jobs while SIGKILLing pool processes, whole workers, the API and redis-server at
random; then check that every accepted job finished and no metric point was written twice.

Everything runs on loopback and is started here (narrownet/cluster.py): a throwaway PostgreSQL cluster (or
--database-url), a redis-server of our own without persistence, uvicorn, --workers Celery workers and the
reconciler. Run from the repository root:

    .venv/bin/python -m bench.chaos [--duration 120] [--workers 2] [--lease 4] [--interval 0.5] [--seed 1]

Kinds of kill, in a random order within each round (so every kind happens) at random intervals:
  worker-child  SIGKILL the pool process running a job; Celery forks a new one
  worker        SIGKILL a whole worker (main process and pool), restart it after 0.5-2 s
  api           SIGKILL uvicorn, restart it at once
  redis         SIGKILL redis-server (its queued messages are lost), restart it after 0.5-2 s
Recovery time of a job hit by a kill: from the kill until a new attempt claims it (or it finishes). For a
worker that is the lease running out plus the next reconciler pass plus pick-up: at most R = lease +
interval (+ pick-up); for redis it also includes the outage and the wait behind other queued jobs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from bench.chaos_report import KINDS, TERMINAL, ChaosConfig, ChaosReport, Kill
from core.db.models import Job, JobStatus, MetricPoint
from core.db.session import make_engine
from narrownet.cluster import Cluster, PostgresCluster, RedisServer, pid_of_lease
from narrownet.processes import kill_group, wait_until


def job_spec(rng: random.Random, n: int) -> dict[str, Any]:
    iterations = rng.randrange(2_000, 12_001, 500)
    return {"name": f"chaos-{n}", "regime": rng.choice(["constrained", "regular"]), "device": "cpu",
            "model": {"arch": "shallow", "width": 16}, "seed": rng.randrange(1000),
            "data": {"source": "synthetic", "n": 64, "d": 8, "seed": rng.randrange(1000)},
            "optim": {"name": "gd", "lr": 0.05, "momentum": 0.9, "iterations": iterations},
            "metrics_every": 250, "checkpoint_every": iterations // 4}


class Chaos:
    def __init__(self, cluster: Cluster, redis: RedisServer, key: str, config: ChaosConfig) -> None:
        self.cluster, self.redis, self.key, self.config = cluster, redis, key, config
        self.rng = random.Random(config.seed)  # the kills
        self.submit_rng = random.Random(config.seed + 1)  # the jobs (another thread)
        engine = make_engine(cluster.database_url)
        self.engine = engine
        self.sessions: sessionmaker[Session] = sessionmaker(bind=engine, expire_on_commit=False)
        self.report = ChaosReport(config)
        self.started = time.monotonic()
        self.submitting = threading.Event()
        self.lock = threading.Lock()
        self.specs: dict[str, dict[str, Any]] = {}

    def now(self) -> float:
        return time.monotonic() - self.started

    # ------------------------------------------------------------------------------------------ processes
    def start_all(self) -> None:
        self.cluster.start_api()
        for i in range(self.config.workers):
            self.cluster.start_worker(f"worker{i}", concurrency=self.config.concurrency)
        self.cluster.start_reconciler()
        self.cluster.wait_api()
        for i in range(self.config.workers):
            self.cluster.wait_worker(f"worker{i}")

    def running_jobs(self) -> dict[str, tuple[int, int]]:
        """Running jobs -> (attempt, pid of the pool process holding the lease)."""
        with self.sessions() as s:
            rows = s.execute(select(Job.id, Job.attempt, Job.lease_owner).where(Job.status == JobStatus.RUNNING))
            return {r.id: (r.attempt, pid) for r in rows if (pid := pid_of_lease(r.lease_owner))}

    def queued_jobs(self) -> dict[str, int]:
        with self.sessions() as s:
            rows = s.execute(select(Job.id, Job.attempt).where(Job.status == JobStatus.QUEUED))
            return {r.id: r.attempt for r in rows}

    def record(self, kind: str, affected: dict[str, int]) -> None:
        self.report.kills.append(Kill(self.now(), kind, affected))

    def kill(self, kind: str) -> bool:
        """Inflict one fault of this kind (and restore the process after its outage); False if none was possible."""
        if kind == "worker-child":
            running = self.running_jobs()
            if not running:
                return False
            job_id = self.rng.choice(sorted(running))
            attempt, pid = running[job_id]
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                return False  # it finished just now
            self.record(kind, {job_id: attempt})
            return True
        if kind == "worker":
            name = self.rng.choice(sorted(n for n in self.cluster.processes if n.startswith("worker")))
            group = self.cluster.processes[name].pid
            hit = {j: a for j, (a, pid) in self.running_jobs().items() if _group_of(pid) == group}
            self.cluster.kill(name)
            self.record(kind, hit)
            time.sleep(self.rng.uniform(*self.config.outage))  # the outage itself, not a synchronisation
            self.cluster.start_worker(name, concurrency=self.config.concurrency)
            return True
        if kind == "api":
            self.cluster.kill("api")
            killed_at = time.monotonic()
            self.cluster.start_api()
            self.cluster.wait_api()
            self.report.api_downtimes.append(time.monotonic() - killed_at)
            self.record(kind, {})
            return True
        queued = self.queued_jobs()  # redis: these jobs' messages are lost with it
        self.redis.kill()
        self.record(kind, queued)
        time.sleep(self.rng.uniform(*self.config.outage))
        self.redis.start()
        return True

    # ---------------------------------------------------------------------------------------- submitting
    def submit_loop(self) -> None:
        n = 0
        with httpx.Client(base_url=self.cluster.url, timeout=10.0,
                          headers={"Authorization": f"Bearer {self.key}"}) as http:
            while self.submitting.is_set():
                n += 1
                spec = job_spec(self.submit_rng, n)
                job_id = self._submit(http, spec, f"chaos-{self.config.seed}-{n}")
                self.report.submitted += 1
                if job_id is not None:
                    with self.lock:
                        self.report.accepted.append(job_id)
                        self.specs[job_id] = spec
                time.sleep(self.config.submit_every)

    def _submit(self, http: httpx.Client, spec: dict[str, Any], key: str) -> str | None:
        # Retried with the same Idempotency-Key, so a submit cut off by a kill never makes a second job.
        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline:
            try:
                answer = http.post("/v1/jobs", json=spec, headers={"Idempotency-Key": key})
                if answer.status_code in (200, 201):
                    return answer.json()["id"]
                if answer.status_code < 500 and answer.status_code != 429:
                    raise RuntimeError(f"submit refused: {answer.status_code} {answer.text}")
            except httpx.TransportError:
                pass  # the API is being killed or restarted
            time.sleep(0.2)
        return None

    # ---------------------------------------------------------------------------------------- observing
    def observe(self, stop: threading.Event) -> None:
        """Note when each job hit by a kill is claimed again (or finishes)."""
        while not stop.is_set():
            with self.sessions() as s:
                state = {r.id: (r.attempt, r.status) for r in s.execute(select(Job.id, Job.attempt, Job.status))}
            for event in list(self.report.kills):
                for job_id, attempt in event.affected.items():
                    if job_id in event.recovered_after or job_id not in state:
                        continue
                    now_attempt, status = state[job_id]
                    after = self.now() - event.at
                    if event.kind.startswith("worker") and job_id not in event.released_after and (
                            status is not JobStatus.RUNNING or now_attempt > attempt):
                        event.released_after[job_id] = after
                    if now_attempt > attempt or status in TERMINAL:
                        event.recovered_after[job_id] = after
            stop.wait(0.05)

    # ---------------------------------------------------------------------------------------------- run
    def run(self) -> ChaosReport:
        self.start_all()
        self.started = time.monotonic()
        self.submitting.set()
        stop_observing = threading.Event()
        submitter = threading.Thread(target=self.submit_loop, daemon=True)
        observer = threading.Thread(target=self.observe, args=(stop_observing,), daemon=True)
        submitter.start(), observer.start()
        try:
            self._kill_until(self.config.duration)
        finally:
            self.submitting.clear()
            submitter.join(timeout=90)
        drain_from = time.monotonic()
        try:
            wait_until(self._all_finished, self.config.drain_timeout, "every accepted job to finish", 0.2)
        except TimeoutError:
            pass  # reported below as unfinished
        self.report.drain_seconds = time.monotonic() - drain_from
        stop_observing.set()
        observer.join(timeout=10)
        self._check()
        self.engine.dispose()
        return self.report

    def _kill_until(self, duration: float) -> None:
        kinds: list[str] = []
        while self.now() < duration:
            time.sleep(self.rng.uniform(*self.config.kill_every))  # the chaos schedule
            if self.now() >= duration:
                break
            if not kinds:
                kinds = self.rng.sample(KINDS, len(KINDS))
            if self.kill(kinds[0]):
                kinds.pop(0)

    def _all_finished(self) -> bool:
        with self.sessions() as s:
            return not s.scalar(select(func.count()).select_from(Job).where(Job.status.not_in(TERMINAL)))

    def _check(self) -> None:
        with self.sessions() as s:
            jobs = {j.id: j for j in s.scalars(select(Job))}
            per_step = (select(MetricPoint.job_id, func.count().label("n")).group_by(MetricPoint.job_id,
                        MetricPoint.step).subquery())
            self.report.duplicated_metric_rows = s.scalar(
                select(func.count()).select_from(per_step).where(per_step.c.n > 1)) or 0
            steps: dict[str, list[int]] = {}
            for job_id, step in s.execute(select(MetricPoint.job_id, MetricPoint.step).order_by(MetricPoint.step)):
                steps.setdefault(job_id, []).append(step)
        report = self.report
        report.statuses = {}
        for job in jobs.values():
            report.statuses[job.status.value] = report.statuses.get(job.status.value, 0) + 1
        report.unfinished = [j for j in report.accepted if j not in jobs or jobs[j].status not in TERMINAL]
        report.failures = {j.id: j.error or "" for j in jobs.values() if j.status is JobStatus.FAILED}
        for job_id, spec in self.specs.items():
            job = jobs.get(job_id)
            if job is not None and job.status is JobStatus.SUCCEEDED:
                cadence = list(range(0, spec["optim"]["iterations"] + 1, spec["metrics_every"]))
                if steps.get(job_id) != cadence:
                    report.metric_gaps.append(job_id)


def _group_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def run_chaos(cluster: Cluster, redis: RedisServer, key: str, config: ChaosConfig) -> ChaosReport:
    """Start the cluster's processes, run the chaos, drain, check; the caller stops the cluster."""
    return Chaos(cluster, redis, key, config).run()


def create_key(database_url: str) -> str:
    from api.services.keys import create_key as create

    engine = make_engine(database_url)
    try:
        with sessionmaker(bind=engine).begin() as s:
            return create(s, "chaos")[1]
    finally:
        engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = ChaosConfig()
    parser.add_argument("--duration", type=float, default=defaults.duration)
    parser.add_argument("--workers", type=int, default=defaults.workers)
    parser.add_argument("--concurrency", type=int, default=defaults.concurrency)
    parser.add_argument("--lease", type=float, default=defaults.lease)
    parser.add_argument("--interval", type=float, default=defaults.interval)
    parser.add_argument("--submit-every", type=float, default=defaults.submit_every)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--database-url", help="default: a throwaway PostgreSQL cluster of our own")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    config = ChaosConfig(duration=args.duration, workers=args.workers, concurrency=args.concurrency,
                         lease=args.lease, interval=args.interval, submit_every=args.submit_every, seed=args.seed)

    import tempfile

    from core.db.migrate import upgrade

    home = Path(tempfile.mkdtemp(prefix="narrownet-chaos-"))
    postgres = None
    redis = RedisServer(home)
    cluster = None
    try:
        if args.database_url:
            database_url = args.database_url
        else:
            postgres = PostgresCluster()
            postgres.init()
            postgres.start()
            database_url = postgres.create_database("chaos")
        upgrade(database_url)
        redis.start()
        cluster = Cluster(home / "cluster", database_url, redis.url(), config.settings())
        cluster.home.mkdir()
        report = run_chaos(cluster, redis, create_key(database_url), config)
    finally:
        if cluster is not None:
            cluster.stop()
        if redis.process is not None:
            kill_group(redis.process)
        if postgres is not None:
            postgres.destroy()
    print(f"command: {' '.join([Path(sys.executable).name, '-m', 'bench.chaos', *sys.argv[1:]])}")
    print(report.summary())
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=2, default=str))
    print(f"logs: {home}")
    return 0 if report.ok() else 1


if __name__ == "__main__":
    sys.exit(main())
