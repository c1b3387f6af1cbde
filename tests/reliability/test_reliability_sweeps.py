"""The Guarantees per job inside a pack: a worker SIGKILLed mid-pack loses no config. The reconciler sends the pack's
jobs back as a pack, each resumes from its own last recorded checkpoint, every config succeeds with exactly one
metric point per recorded step (no gap, no duplicate) and ends with the weights of an uninterrupted run (bitwise,
CPU, one torch thread). On both backends: PostgreSQL + a redis-server of our own, and the embedded SQLite database
+ SQLite broker (which forgets a message once a worker takes it, so only the reconciler brings the pack back)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import sessionmaker

from core.db.migrate import upgrade
from core.db.models import JobStatus
from core.db.session import make_engine
from narrownet.cluster import Cluster
from tests.reliability.conftest import SETTINGS, Db, client, expected_steps, final_weights
from tests.reliability.test_reliability_worker_loss import assert_resumed_exactly_once_per_step

pytestmark = [pytest.mark.service, pytest.mark.slow]

BASE = {"name": "pack", "regime": "constrained", "model": {"arch": "shallow", "width": 16},
        "data": {"source": "synthetic", "n": 64, "d": 8, "seed": 3}, "device": "cpu",
        "optim": {"name": "gd", "lr": 0.05, "momentum": 0.9, "iterations": 20_000},
        "metrics_every": 250, "checkpoint_every": 2_000}
GRID = {"optim.lr_hidden": [0.02, 0.05, 0.08], "seed": [11, 12]}


Backend = tuple[Cluster, Db, str]


@pytest.fixture(params=["postgres", "embedded"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "postgres":
        make_cluster: Callable[..., Cluster] = request.getfixturevalue("make_cluster")
        yield make_cluster(), request.getfixturevalue("db"), request.getfixturevalue("api_key")
        return
    home = tmp_path / "embedded"
    home.mkdir()
    url = f"sqlite:///{home / 'narrownet.db'}"
    upgrade(url)
    engine = make_engine(url)
    db = Db(sessionmaker(bind=engine, expire_on_commit=False))
    from api.services.keys import create_key

    with db.sessions.begin() as s:
        _, key = create_key(s, "reliability-embedded")
    cluster = Cluster(home, url, f"sqla+sqlite:///{home / 'broker.db'}", dict(SETTINGS))
    try:
        yield cluster, db, key
    finally:
        cluster.stop()
        engine.dispose()


def run_sweep(cluster: Cluster, db: Db, key: str, name: str) -> dict[str, Any]:
    with client(cluster, key) as c:
        return c.submit_sweep({"name": name, "base": BASE, "grid": GRID})


def test_sigkill_mid_pack_every_config_resumes_and_succeeds_with_the_uninterrupted_weights(
        backend: Backend, tmp_path: Path):
    cluster, db, key = backend
    cluster.start_api(), cluster.start_worker("worker1"), cluster.start_reconciler()
    cluster.wait_api(), cluster.wait_worker("worker1")
    sweep = run_sweep(cluster, db, key, "killed")
    assert [len(p["job_ids"]) for p in sweep["packs"]] == [6]
    running = {job_id: db.wait_metrics_past_checkpoint(job_id) for job_id in sweep["job_ids"]}
    assert len({job.lease_owner for job in running.values()}) == 1  # one task trains them all

    cluster.kill("worker1")  # main process and pool together, mid-pack
    killed_at = time.monotonic()
    cluster.start_worker("worker2")
    for job_id, job in running.items():
        db.wait_for(job_id, "to be claimed again", lambda j, a=job.attempt: j.attempt > a)
    print(f"\nrecovery (whole worker SIGKILL mid-pack -> all 6 claimed again): {time.monotonic() - killed_at:.2f}s")
    assert "narrownet.run_pack" in cluster.log_text("worker2")  # sent back as a pack, trained as one again

    spec = {"optim": BASE["optim"], "metrics_every": BASE["metrics_every"]}
    for job_id, job in running.items():
        assert db.wait_terminal(job_id).status is JobStatus.SUCCEEDED
        assert [step for step, _ in db.metric_rows(job_id)] == expected_steps(spec)
        assert_resumed_exactly_once_per_step(db, job_id, spec, job.attempt)
    assert db.duplicated_metric_rows() == 0

    reference = run_sweep(cluster, db, key, "uninterrupted")
    for job_id in reference["job_ids"]:
        assert db.wait_terminal(job_id).status is JobStatus.SUCCEEDED
    for i, (resumed, uninterrupted) in enumerate(zip(sweep["job_ids"], reference["job_ids"], strict=True)):
        assert (final_weights(cluster, key, resumed, tmp_path / f"r{i}.safetensors")
                == final_weights(cluster, key, uninterrupted, tmp_path / f"u{i}.safetensors")), i
