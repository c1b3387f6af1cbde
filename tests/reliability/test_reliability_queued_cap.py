"""The per-user cap on queued jobs holds under concurrent submissions: 30 submits released together by a barrier,
spread over two API processes on one database, with the cap at 5, leave exactly 5 jobs queued and get 25 answers
429 too_many_queued_jobs with Retry-After. Five rounds on each backend: SQLite (the write lock, BEGIN
IMMEDIATE) and PostgreSQL (the owner's row lock). No worker runs, so every accepted job stays queued.
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from core.db.migrate import upgrade
from core.db.models import Job, JobStatus
from core.db.session import make_engine
from narrownet.cluster import Cluster
from tests.reliability.conftest import ClusterFactory, Db

CAP, SUBMITS, ROUNDS = 5, 30, 5
SPEC = {"name": "capped", "regime": "constrained", "model": {"arch": "shallow", "width": 4},
        "data": {"source": "synthetic", "n": 8, "d": 3}, "optim": {"name": "gd", "lr": 0.1, "iterations": 10}}
CAPPED = {"NARROWNET_MAX_QUEUED_JOBS_PER_USER": str(CAP)}


def submit_together(urls: list[str], key: str) -> list[httpx.Response]:
    """SUBMITS submissions with one key, alternating between the API processes, released by one barrier."""
    clients = [httpx.Client(base_url=urls[i % len(urls)], headers={"Authorization": f"Bearer {key}"}, timeout=60)
               for i in range(SUBMITS)]
    try:
        for client in clients:  # connected before the barrier, so that the requests leave at one moment
            assert client.get("/healthz").status_code == 200
        barrier = threading.Barrier(SUBMITS)
        answers: list[httpx.Response | BaseException | None] = [None] * SUBMITS

        def submit(i: int) -> None:
            barrier.wait()
            try:
                answers[i] = clients[i].post("/v1/jobs", json=SPEC)
            except BaseException as exc:  # reported below with the others, not lost in a thread
                answers[i] = exc

        threads = [threading.Thread(target=submit, args=(i,)) for i in range(SUBMITS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for client in clients:
            client.close()
    failed = [a for a in answers if not isinstance(a, httpx.Response)]
    assert not failed, failed
    return [a for a in answers if isinstance(a, httpx.Response)]


def queued_jobs(sessions: sessionmaker[Session], owner_id: str) -> int:
    with sessions() as s:
        return s.scalar(select(func.count()).select_from(Job)
                        .where(Job.owner_id == owner_id, Job.status == JobStatus.QUEUED)) or 0


def new_key(sessions: sessionmaker[Session], name: str) -> tuple[str, str]:
    """(owner id, plaintext key) of a new user."""
    from api.services.keys import create_key

    with sessions.begin() as s:
        row, plaintext = create_key(s, name)
        return row.id, plaintext


def run_rounds(urls: list[str], sessions: sessionmaker[Session]) -> None:
    for round_ in range(ROUNDS):
        owner_id, key = new_key(sessions, f"cap-round-{round_}")
        answers = submit_together(urls, key)
        statuses = Counter(a.status_code for a in answers)
        assert statuses == {201: CAP, 429: SUBMITS - CAP}, (round_, statuses, [a.text for a in answers
                                                                                  if a.status_code >= 500])
        for refused in (a for a in answers if a.status_code == 429):
            assert refused.json()["error"]["code"] == "too_many_queued_jobs"
            assert int(refused.headers["Retry-After"]) >= 1
        accepted = {a.json()["id"] for a in answers if a.status_code == 201}
        assert queued_jobs(sessions, owner_id) == len(accepted) == CAP, round_


def start_apis(clusters: list[Cluster]) -> list[str]:
    for cluster in clusters:
        cluster.home.mkdir(exist_ok=True)
        cluster.start_api()
    for cluster in clusters:
        cluster.wait_api()
    return [cluster.url for cluster in clusters]


def test_the_cap_holds_under_simultaneous_submits_on_sqlite(tmp_path: Path):
    database_url = f"sqlite:///{tmp_path / 'narrownet.db'}"
    upgrade(database_url)
    broker_url = f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    clusters = [Cluster(tmp_path / name, database_url, broker_url, CAPPED) for name in ("api-a", "api-b")]
    engine = make_engine(database_url)
    try:
        run_rounds(start_apis(clusters), sessionmaker(bind=engine, expire_on_commit=False))
    finally:
        for cluster in clusters:
            cluster.stop()
        engine.dispose()


@pytest.mark.service
def test_the_cap_holds_under_simultaneous_submits_on_postgres(make_cluster: ClusterFactory, db: Db):
    clusters = [make_cluster(**CAPPED), make_cluster(**CAPPED)]
    run_rounds(start_apis(clusters), db.sessions)
