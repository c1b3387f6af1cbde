"""run_pack against a real database (SQLite and PostgreSQL) and the real trainer; no Celery here: every job of a
pack is written as if it had run alone (claim, fenced metrics, checkpoint rows, outcome), and leaves alone."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import torch
from safetensors.torch import load_file

from core.db.models import JobStatus, utcnow
from tests.worker.conftest import WorkerDb, tiny_spec
from tests.worker.test_runner import (
    assert_series_packed_from_points,
    checkpoint_rows,
    metric_rows,
    run,
    set_job,
    wait_for,
)
from worker.pack_runner import run_pack


@pytest.fixture(autouse=True)
def one_thread():
    # Bitwise comparisons with lone runs hold on one torch thread (trainer/shallow/net.py Workspace).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def config(lr: float, seed: int, **overrides) -> dict:
    return tiny_spec(optim={"name": "gd", "lr_hidden": lr, "lr_outer": 0.1, "momentum": 0.9, "iterations": 200},
                     seed=seed, **overrides)


def pack(db: WorkerDb, ids: list[str], worker_id: str = "w1") -> dict:
    return run_pack(ids, worker_id=worker_id, settings=db.settings, sessions=db.sessions)


def final_tensors(db: WorkerDb, job_id: str) -> dict[str, torch.Tensor]:
    (final,) = [c for c in checkpoint_rows(db, job_id) if c.final]
    return load_file(str(db.settings.resolved_artifact_dir / final.relpath))


def test_every_job_of_a_pack_ends_as_it_does_alone(worker_db: WorkerDb):
    owner = worker_db.add_owner()
    specs = [config(0.05, 1), config(0.2, 2), config(0.1, 3, constraint={"radius": 0.5})]
    ids = [worker_db.add_job(s, owner_id=owner) for s in specs]

    assert pack(worker_db, ids) == {i: JobStatus.SUCCEEDED for i in ids}

    for job_id, spec in zip(ids, specs, strict=True):
        job = worker_db.job(job_id)
        assert (job.status, job.attempt, job.step, job.total_steps) == (JobStatus.SUCCEEDED, 1, 200, 200)
        assert [p.step for p in metric_rows(worker_db, job_id)] == list(range(0, 201, 20))
        assert [c.step for c in checkpoint_rows(worker_db, job_id)] == [100, 200]
        assert_series_packed_from_points(worker_db, job_id)
        alone = worker_db.add_job(spec, owner_id=owner)
        assert run(worker_db, alone) is JobStatus.SUCCEEDED
        assert worker_db.job(alone).final_metrics == job.final_metrics
        mine, theirs = final_tensors(worker_db, job_id), final_tensors(worker_db, alone)
        assert all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_a_diverging_config_fails_alone_while_the_others_succeed(worker_db: WorkerDb):
    owner = worker_db.add_owner()
    regular = {"regime": "regular", "model": {"arch": "shallow", "width": 8, "activation": "relu"}}
    ids = [worker_db.add_job(config(lr, 1, **regular, metrics_every=1), owner_id=owner) for lr in (0.05, 100.0)]

    statuses = pack(worker_db, ids)

    assert statuses == {ids[0]: JobStatus.SUCCEEDED, ids[1]: JobStatus.FAILED}
    failed = worker_db.job(ids[1])
    assert failed.error.startswith("TrainingDiverged: training diverged at step")
    assert failed.lease_owner is None and failed.finished_at is not None
    assert [p.step for p in metric_rows(worker_db, ids[0])] == list(range(201))


def test_jobs_it_cannot_claim_are_left_alone_and_the_rest_train(worker_db: WorkerDb):
    owner = worker_db.add_owner()
    free = worker_db.add_job(config(0.05, 1), owner_id=owner)
    leased = worker_db.add_job(config(0.1, 2), owner_id=owner, status=JobStatus.RUNNING, attempt=1,
                               lease_owner="other", lease_expires_at=utcnow() + timedelta(minutes=5))
    cancelled = worker_db.add_job(config(0.2, 3), owner_id=owner, cancel_requested=True)

    assert pack(worker_db, [free, leased, cancelled]) == {free: JobStatus.SUCCEEDED}

    assert (worker_db.job(leased).status, worker_db.job(leased).lease_owner) == (JobStatus.RUNNING, "other")
    assert worker_db.job(cancelled).status is JobStatus.CANCELLED
    assert metric_rows(worker_db, leased) == [] and metric_rows(worker_db, cancelled) == []


def long_config(lr: float, seed: int) -> dict:
    return tiny_spec(optim={"name": "gd", "lr_hidden": lr, "lr_outer": 0.01, "iterations": 2_000_000},
                     seed=seed, metrics_every=500, checkpoint_every=None)


def test_a_cancelled_job_stops_and_a_job_taken_over_is_dropped_while_the_rest_go_on(worker_db: WorkerDb):
    owner = worker_db.add_owner()
    ids = [worker_db.add_job(long_config(0.01 * (i + 1), i), owner_id=owner) for i in range(3)]
    outcome: list[dict] = []
    thread = threading.Thread(target=lambda: outcome.append(pack(worker_db, ids)), daemon=True)
    thread.start()
    wait_for(lambda: all(worker_db.job(i).step > 0 for i in ids), 60, "the pack to report progress")

    set_job(worker_db, ids[0], cancel_requested=True)
    wait_for(lambda: worker_db.job(ids[0]).status is JobStatus.CANCELLED, 60, "the cancel to stop job 0")
    # Job 1 changes hands (its lease "ran out" and another worker claimed it): this attempt must stop writing.
    set_job(worker_db, ids[1], attempt=2, lease_owner="other")
    stalled = worker_db.job(ids[1]).step
    set_job(worker_db, ids[2], cancel_requested=True)  # and now the last one: the pack ends
    thread.join(timeout=60)

    assert outcome == [{ids[0]: JobStatus.CANCELLED, ids[1]: None, ids[2]: JobStatus.CANCELLED}]
    job0 = worker_db.job(ids[0])
    assert 0 < job0.step < 2_000_000 and [c.step for c in checkpoint_rows(worker_db, ids[0])] == [job0.step]
    taken = worker_db.job(ids[1])
    assert (taken.status, taken.attempt, taken.lease_owner, taken.step) == (JobStatus.RUNNING, 2, "other", stalled)
    assert {p.attempt for p in metric_rows(worker_db, ids[1])} == {1}
    assert worker_db.job(ids[2]).step > job0.step  # it kept training after job 0 left
