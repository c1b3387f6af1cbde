"""A finished job's series, packed per metric (core/repositories/series.py), answer every chart read exactly as its
points do, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from core.db.models import JobStatus, MetricPoint, MetricSeries
from core.repositories.series import metric_series, pack, store_series
from tests.worker.conftest import WorkerDb, tiny_spec
from worker.runner import run_job

METRICS = ("train_loss", "w_dist", "note", "flag", "absent")


def random_points(rng: random.Random, count: int) -> list[tuple[int, dict[str, Any]]]:
    """Steps with gaps; train_loss sometimes null, w_dist only on some points, an int now and then, and values
    that are no numbers (text, booleans)."""
    points, step = [], 0
    for _ in range(count):
        step += rng.choice((1, 1, 5, 10, 100))
        values: dict[str, Any] = {"train_loss": None if rng.random() < 0.1 else rng.random(), "note": "text",
                                  "flag": rng.random() < 0.5}
        if rng.random() < 0.3:
            values["w_dist"] = rng.choice((rng.randint(0, 9), rng.uniform(-1e6, 1e6)))
        points.append((step, values))
    return points


def add_points(db: WorkerDb, job_id: str, points: list[tuple[int, dict[str, Any]]]) -> None:
    with db.sessions.begin() as s:
        s.add_all(MetricPoint(job_id=job_id, step=step, values=values, attempt=1) for step, values in points)


def answer(db: WorkerDb, job_ids: list[str], metric: str, limit: int = 10**6, **steps: int | None) -> dict:
    with db.sessions() as s:
        found = metric_series(s, job_ids, metric, limit=limit, **steps)
    return {job_id: (x.tolist(), y.tolist()) for job_id, (x, y) in found.items()}


def test_a_packed_series_answers_exactly_what_its_points_answer(worker_db: WorkerDb) -> None:
    rng = random.Random(7)
    owner = worker_db.add_owner()
    jobs = [worker_db.add_job(tiny_spec(), owner_id=owner) for _ in range(5)]
    for job_id in jobs[:4]:  # the fifth has no points at all
        add_points(worker_db, job_id, random_points(rng, rng.randint(1, 300)))
    ranges = [{}, {"from_step": 50}, {"to_step": 400}, {"from_step": 37, "to_step": 1200}, {"from_step": 10**6}]
    ranges += [{"from_step": a, "to_step": a + rng.randint(0, 2000)} for a in rng.sample(range(3000), 6)]
    asked = {(metric, i): answer(worker_db, jobs, metric, **r) for metric in METRICS for i, r in enumerate(ranges)}
    assert asked[("train_loss", 0)].keys() == set(jobs[:4]) and not asked[("note", 0)]

    for packed in (jobs[:2], jobs):  # some jobs packed and some not, then every one
        for job_id in packed:
            with worker_db.sessions.begin() as s:
                store_series(s, job_id)
        for (metric, i), expected in asked.items():
            assert answer(worker_db, jobs, metric, **ranges[i]) == expected, (metric, ranges[i])
    with worker_db.sessions() as s:
        names = set(s.scalars(select(MetricSeries.metric).where(MetricSeries.job_id.in_(jobs)).distinct()))
    assert names == {"train_loss", "w_dist"}  # text and booleans are no numbers


def test_packing_again_replaces_what_the_job_had(worker_db: WorkerDb) -> None:
    job_id = worker_db.add_job(tiny_spec())
    add_points(worker_db, job_id, [(0, {"train_loss": 1.0, "w_dist": 0.0}), (10, {"train_loss": 0.5})])
    for _ in range(2):  # a retried finish packs again
        with worker_db.sessions.begin() as s:
            store_series(s, job_id)
    add_points(worker_db, job_id, [(20, {"train_loss": 0.25})])
    with worker_db.sessions.begin() as s:
        store_series(s, job_id)
    assert answer(worker_db, [job_id], "train_loss") == {job_id: ([0, 10, 20], [1.0, 0.5, 0.25])}
    with worker_db.sessions() as s:
        assert s.scalar(select(func.count()).select_from(MetricSeries).where(MetricSeries.job_id == job_id)) == 2


def test_a_read_goes_past_its_limit_by_little_on_either_path(worker_db: WorkerDb) -> None:
    owner = worker_db.add_owner()
    jobs = [worker_db.add_job(tiny_spec(), owner_id=owner) for _ in range(4)]
    for job_id in jobs:
        add_points(worker_db, job_id, [(step, {"train_loss": 1.0}) for step in range(100)])
    for job_id in jobs[:2]:
        with worker_db.sessions.begin() as s:
            store_series(s, job_id)
    for limit in (50, 150, 250, 399, 400):
        read = sum(len(steps) for steps, _ in answer(worker_db, jobs, "train_loss", limit=limit).values())
        # Past the limit whenever there is more, so the caller can tell; never a whole series further.
        assert limit < read <= limit + 100 if limit < 400 else read == 400


def test_only_numbers_are_packed_under_names_a_chart_can_ask_for() -> None:
    packed = pack([(0, {"a": 1, "b": True, "c": None, "d": "x", "e-f": 2.0, "g": 0.5}), (5, {"a": 2.5})])
    assert {name: (x.tolist(), y.tolist()) for name, (x, y) in packed.items()} == {
        "a": ([0, 5], [1.0, 2.5]), "g": ([0], [0.5])}


def test_a_job_is_packed_when_it_finishes_with_at_least_the_settings_points(worker_db: WorkerDb) -> None:
    # tiny_spec: 200 steps, a point every 20, so 11 points.
    outcomes = {}
    for least in (12, 11):
        job_id = worker_db.add_job(tiny_spec())
        settings = worker_db.settings_with(series_pack_min_points=least)
        assert run_job(job_id, worker_id="w", settings=settings, sessions=worker_db.sessions) is JobStatus.SUCCEEDED
        with worker_db.sessions() as s:
            outcomes[least] = set(s.scalars(select(MetricSeries.metric).where(MetricSeries.job_id == job_id)))
        assert answer(worker_db, [job_id], "train_loss")[job_id][0] == list(range(0, 201, 20))
    assert outcomes[12] == set() and "train_loss" in outcomes[11]


def test_the_pack_series_command_packs_finished_jobs_that_have_none_and_only_those(worker_db: WorkerDb) -> None:
    def points(count: int) -> list[tuple[int, dict[str, Any]]]:
        return [(10 * i, {"train_loss": 1.0 / (i + 1)}) for i in range(count)]

    jobs = {name: worker_db.add_job(tiny_spec(), status=status) for name, status in (
        ("finished before", JobStatus.SUCCEEDED), ("failed before", JobStatus.FAILED),
        ("running", JobStatus.RUNNING), ("too few", JobStatus.CANCELLED), ("packed", JobStatus.SUCCEEDED))}
    for name, job_id in jobs.items():
        add_points(worker_db, job_id, points(2 if name == "too few" else 5))
    with worker_db.sessions.begin() as s:
        store_series(s, jobs["packed"])
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("NARROWNET_")},
           "NARROWNET_DATABASE_URL": worker_db.settings.resolved_database_url}
    command = [str(Path(sys.executable).parent / "narrownet"), "db", "pack-series", "--min-points", "3"]

    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    with worker_db.sessions() as s:
        packed = set(s.scalars(select(MetricSeries.job_id).where(MetricSeries.job_id.in_(jobs.values()))))
    assert packed == {jobs["finished before"], jobs["failed before"], jobs["packed"]}
    assert answer(worker_db, [jobs["failed before"]], "train_loss")[jobs["failed before"]][0] == [0, 10, 20, 30, 40]
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "packed the series of 0 finished job(s) with at least 3 points" in again.stdout
