"""Promise 4: a corrupted checkpoint is never used. The API refuses to serve it (409), a resumed attempt skips
it for the previous valid one (and still ends with the uninterrupted run's weights), and a job whose every
checkpoint is corrupted fails at once with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.db.models import JobStatus
from narrownet.client import ApiError
from narrownet.cluster import Cluster
from tests.reliability.conftest import Db, client, final_weights, flipped_weight, long_spec

pytestmark = [pytest.mark.service, pytest.mark.slow]


def checkpoints_on_disk(cluster: Cluster, job_id: str) -> list[Path]:
    """The store's copies (the local backend: the artifact directory), oldest first."""
    return sorted((cluster.home / "artifacts" / "jobs" / job_id).rglob("ckpt-*.safetensors"), key=lambda p: p.name)


def flip_a_weight(path: Path) -> None:
    """Flip W[0, 0]'s lowest bit in place (the worker's own run-directory copy is a link to the same file)."""
    path.write_bytes(flipped_weight(path.read_bytes()))


def test_corrupted_checkpoints_are_skipped_on_resume_or_fail_the_job_clearly(make_cluster, db: Db, api_key: str,
                                                                               tmp_path: Path):
    cluster = make_cluster()
    cluster.start_api(), cluster.start_worker("worker1", concurrency=2), cluster.start_reconciler()
    cluster.wait_api(), cluster.wait_worker("worker1")
    spec = long_spec("corrupted-newest")
    with client(cluster, api_key) as c:
        newest_bad = c.submit(spec)["id"]
        all_bad = c.submit(long_spec("all-corrupted"))["id"]
    for job_id in (newest_bad, all_bad):
        db.wait_checkpoint(job_id, count=2)
    cluster.kill("worker1")  # nothing writes to the job directories any more

    newest, previous = checkpoints_on_disk(cluster, newest_bad)[::-1][:2]
    flip_a_weight(newest)
    with client(cluster, api_key) as c:
        try:
            c.fetch_checkpoint(newest_bad, tmp_path / "corrupted.safetensors")
            raise AssertionError("the API served a checkpoint that does not match its sha256")
        except ApiError as exc:
            assert (exc.status_code, exc.code) == (409, "checkpoint_mismatch")
    for path in checkpoints_on_disk(cluster, all_bad):
        flip_a_weight(path)
    cluster.start_worker("worker2", concurrency=2)
    with client(cluster, api_key) as c:
        reference = c.submit(spec)["id"]  # the same spec, never interrupted

    failed = db.wait_terminal(all_bad)
    assert (failed.status, failed.attempt) == (JobStatus.FAILED, 2)  # at once: no retry of a corrupt run
    assert failed.error.startswith("CheckpointError: ") and "does not match recorded" in failed.error

    resumed = db.wait_terminal(newest_bad)
    assert resumed.status is JobStatus.SUCCEEDED and db.wait_terminal(reference).status is JobStatus.SUCCEEDED
    # Attempt 2 started from the previous checkpoint, so it wrote the corrupted step again itself.
    corrupted_step = int(newest.stem.removeprefix("ckpt-"))
    assert (corrupted_step, resumed.attempt) in db.checkpoint_rows(newest_bad)
    assert int(previous.stem.removeprefix("ckpt-")) < corrupted_step
    assert final_weights(cluster, api_key, newest_bad, tmp_path / "resumed.safetensors") == final_weights(
        cluster, api_key, reference, tmp_path / "reference.safetensors")
