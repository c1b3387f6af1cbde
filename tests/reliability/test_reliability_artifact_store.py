"""Workers that share no disk with the API: every process has a home of its own and the S3 store (moto's
server on loopback) is the only place files meet. A dataset job survives SIGKILL of its worker and is resumed by
a worker on "another host" from the store, ending bitwise where an uninterrupted run ends; the store going down
mid-run costs an attempt at most, never the job nor a checkpoint; a tampered object is a 409 on download and a
CheckpointError on resume."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from core.db.models import Checkpoint, JobStatus
from narrownet.client import ApiError
from narrownet.cluster import Cluster
from narrownet.processes import wait_until
from narrownet.s3server import S3Server
from tests.reliability.conftest import (
    ClusterFactory,
    Db,
    assert_resumed_exactly_once_per_step,
    client,
    final_weights,
    flipped_weight,
    long_spec,
)
from tests.s3 import Bucket

pytestmark = [pytest.mark.service, pytest.mark.slow]


def hosts(make_cluster: ClusterFactory, settings: dict[str, str], tmp_path: Path
          ) -> tuple[Cluster, Callable[..., None]]:
    """A cluster whose API keeps its files in its own home, and a way to start a worker on another host (a home
    of its own: its run directories and dataset cache)."""
    cluster = make_cluster(**settings)
    cluster.start_api(), cluster.start_reconciler()

    def worker(name: str, concurrency: int = 1) -> None:
        home = tmp_path / f"host-{name}"
        home.mkdir()
        cluster.start_worker(name, concurrency, env={"NARROWNET_HOME": str(home)})
        cluster.wait_worker(name)

    cluster.wait_api()
    return cluster, worker


def bucket_of(s3_server: S3Server, settings: dict[str, str]) -> Bucket:
    name, prefix = settings["NARROWNET_ARTIFACT_URL"].removeprefix("s3://").split("/", 1)
    return Bucket(s3_server, name, prefix)


def dataset_file(tmp_path: Path) -> Path:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(64, 8)).astype(np.float32)
    buffer = io.BytesIO()
    np.savez(buffer, X=x, y=np.tanh(x @ rng.normal(size=8)).astype(np.float32))
    path = tmp_path / "upload.npz"
    path.write_bytes(buffer.getvalue())
    return path


def test_a_dataset_job_killed_on_one_host_is_resumed_on_another_from_the_store(
        make_cluster, db: Db, api_key: str, s3_server: S3Server, s3_cluster_settings: dict[str, str],
        tmp_path: Path):
    cluster, worker = hosts(make_cluster, s3_cluster_settings, tmp_path)
    worker("a")
    with client(cluster, api_key) as c:
        dataset = c.upload_dataset(dataset_file(tmp_path), name="shared-by-store")
        spec = long_spec("across-hosts", data={"source": "dataset", "id": dataset["id"]})
        job_id = c.submit(spec)["id"]
    db.wait_checkpoint(job_id, count=2)
    running = db.wait_metrics_past_checkpoint(job_id)

    cluster.kill("a")  # the host is gone, with its run directory and its dataset cache
    worker("b")
    assert db.wait_terminal(job_id).status is JobStatus.SUCCEEDED
    resumed_from = max(s for s, a in db.checkpoint_rows(job_id) if a == running.attempt)
    assert f"fetched the checkpoint at step {resumed_from} from s3://" in cluster.log_text("b")
    assert_resumed_exactly_once_per_step(db, job_id, spec, running.attempt)

    with client(cluster, api_key) as c:
        reference = c.submit(spec)["id"]  # the same spec, never interrupted, on host b
    assert db.wait_terminal(reference).status is JobStatus.SUCCEEDED
    assert final_weights(cluster, api_key, job_id, tmp_path / "resumed.safetensors") == final_weights(
        cluster, api_key, reference, tmp_path / "reference.safetensors")
    # Host b fetched the dataset once for both jobs; nothing of the jobs is on the API's disk.
    assert len(list((tmp_path / "host-b" / "work" / "cache" / "datasets").iterdir())) == 1
    assert not list(cluster.home.rglob("ckpt-*")) and not list(cluster.home.rglob("*.npz"))


def test_the_store_down_mid_run_costs_an_attempt_never_the_job_nor_a_checkpoint(
        make_cluster, db: Db, api_key: str, s3_server: S3Server, s3_cluster_settings: dict[str, str],
        tmp_path: Path):
    cluster, worker = hosts(make_cluster, s3_cluster_settings, tmp_path)
    worker("a")
    spec = long_spec("store-outage")
    with client(cluster, api_key) as c:
        job_id = c.submit(spec)["id"]
    first = db.wait_checkpoint(job_id, count=1)

    s3_server.stop()
    try:
        with client(cluster, api_key) as c:
            with pytest.raises(ApiError) as refused:
                c.fetch_checkpoint(job_id, tmp_path / "while-down.safetensors")
        assert (refused.value.status_code, refused.value.code) == (503, "artifact_store_unavailable")
        # Longer than a lease (4 s): the attempt stuck publishing gives up, its lease runs out, the reconciler
        # hands the job on, and the next attempt waits for the store in its turn.
        wait_until(lambda: db.job(job_id).attempt > first.attempt, 60, "the job to be claimed again")
        assert "artifact store unavailable" in cluster.log_text("a")
    finally:
        s3_server.start()

    assert db.wait_terminal(job_id).status is JobStatus.SUCCEEDED
    assert_resumed_exactly_once_per_step(db, job_id, spec, first.attempt)
    with client(cluster, api_key) as c:
        reference = c.submit(spec)["id"]
    assert db.wait_terminal(reference).status is JobStatus.SUCCEEDED
    assert final_weights(cluster, api_key, job_id, tmp_path / "outage.safetensors") == final_weights(
        cluster, api_key, reference, tmp_path / "reference.safetensors")


def test_a_tampered_object_is_a_409_on_download_and_a_checkpoint_error_on_resume(
        make_cluster, db: Db, api_key: str, s3_server: S3Server, s3_cluster_settings: dict[str, str],
        tmp_path: Path):
    cluster, worker = hosts(make_cluster, s3_cluster_settings, tmp_path)
    bucket = bucket_of(s3_server, s3_cluster_settings)
    worker("a", concurrency=2)  # both jobs run at once, so neither finishes before the other has checkpoints
    spec = long_spec("tampered-newest")
    with client(cluster, api_key) as c:
        newest_bad = c.submit(spec)["id"]
        all_bad = c.submit(long_spec("all-tampered"))["id"]
    for job_id in (newest_bad, all_bad):
        db.wait_checkpoint(job_id, count=2)
    cluster.kill("a")  # nothing writes to the store any more

    def recorded(job_id: str) -> list[tuple[int, str]]:
        """(step, key) of the job's recorded checkpoints, oldest first."""
        with db.sessions() as s:
            return [(r.step, r.relpath) for r in s.execute(
                select(Checkpoint.step, Checkpoint.relpath).where(Checkpoint.job_id == job_id)
                .order_by(Checkpoint.step))]

    tampered_step, newest = recorded(newest_bad)[-1]
    bucket.write(newest, flipped_weight(bucket.read(newest)))
    with client(cluster, api_key) as c:
        with pytest.raises(ApiError) as refused:
            c.fetch_checkpoint(newest_bad, tmp_path / "tampered.safetensors")
    assert (refused.value.status_code, refused.value.code) == (409, "checkpoint_mismatch")
    assert not (tmp_path / "tampered.safetensors").exists()
    in_store = {key.removeprefix(f"{bucket.prefix}/") for key in bucket.object_keys()}
    for _, key in recorded(all_bad):
        if key in in_store:  # older ones were pruned: the store keeps the newest two, as a run directory does
            bucket.write(key, flipped_weight(bucket.read(key)))

    worker("b", concurrency=2)  # another host: it holds no copy of its own, only the store's
    failed = db.wait_terminal(all_bad)
    assert (failed.status, failed.attempt) == (JobStatus.FAILED, 2)  # at once: no retry of a corrupt run
    assert failed.error.startswith("CheckpointError: ") and "does not match recorded" in failed.error

    resumed = db.wait_terminal(newest_bad)
    assert resumed.status is JobStatus.SUCCEEDED
    assert (tampered_step, resumed.attempt) in db.checkpoint_rows(newest_bad)  # redone from the one before
    with client(cluster, api_key) as c:
        reference = c.submit(spec)["id"]
    assert db.wait_terminal(reference).status is JobStatus.SUCCEEDED
    assert final_weights(cluster, api_key, newest_bad, tmp_path / "resumed.safetensors") == final_weights(
        cluster, api_key, reference, tmp_path / "reference.safetensors")
