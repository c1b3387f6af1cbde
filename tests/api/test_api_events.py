"""GET /v1/jobs/{id}/events against a real uvicorn server (in a thread of the test, so the app's connection
pool can be watched): every stored point once, in order, as it is stored; Last-Event-ID resumes; heartbeats; the
stream ends with the job; one poller per job however many streams, and streams hold no database connection."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, update
from sqlalchemy.orm import Session

from api.app import create_app
from api.services.job_events import READ_CONCURRENCY
from core.db.models import Job, JobStatus, MetricPoint, utcnow
from core.db.session import make_engine
from core.settings import Settings
from narrownet.client import ApiError, NarrownetClient
from narrownet.processes import serving_in_thread, wait_until
from tests.api.conftest import SPEC, make_settings


@dataclass
class Live:
    """A served app, a key, and a writer that stores points the way a worker does (its own engine)."""

    app: FastAPI
    url: str
    settings: Settings
    writer: Engine
    headers: dict[str, str]

    @property
    def key(self) -> str:
        return self.headers["Authorization"].removeprefix("Bearer ")

    def client(self) -> NarrownetClient:
        return NarrownetClient(self.url, self.key, timeout=30)

    def submit(self) -> str:
        with self.client() as client:
            job_id: str = client.submit(SPEC)["id"]
            return job_id

    def store(self, job_id: str, steps: range, *, status: JobStatus = JobStatus.RUNNING) -> None:
        with Session(self.writer) as s, s.begin():
            s.add_all([MetricPoint(job_id=job_id, step=i, values={"train_loss": 1 / (i + 1)}, attempt=1)
                       for i in steps])
            last = steps[-1] if len(steps) else 0
            finished = utcnow() if status.is_terminal else None
            s.execute(update(Job).where(Job.id == job_id).values(status=status, step=last, attempt=1,
                                                                  updated_at=utcnow(), finished_at=finished))


@pytest.fixture
def live(tmp_path: Any, database_url: str) -> Iterator[Live]:
    settings = make_settings(tmp_path, database_url, events_poll_seconds=0.1, events_heartbeat_seconds=0.5)
    app = create_app(settings)
    writer = make_engine(database_url)
    with app.state.runtime.sessions.begin() as s:
        from api.services.keys import create_key

        _, plaintext = create_key(s, "live")
    try:
        with serving_in_thread(app) as url:
            yield Live(app, url, settings, writer, {"Authorization": f"Bearer {plaintext}"})
    finally:
        writer.dispose()


@dataclass
class Watcher:
    """Follows one job's stream in a thread, recording what arrives."""

    live: Live
    job_id: str
    last_event_id: int | None = None
    steps: list[int] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    ended: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    def start(self) -> Watcher:
        threading.Thread(target=self._run, daemon=True).start()
        return self

    def _run(self) -> None:
        try:
            with self.live.client() as client:
                for event in client.events(self.job_id, last_event_id=self.last_event_id):
                    if event.event == "metrics":
                        points = event.json()["points"]
                        self.steps += [p["step"] for p in points]
                        assert int(event.id) == points[-1]["step"]
                    elif event.event == "status":
                        self.statuses.append(event.json()["status"])
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self.ended.set()

    def wait_for_steps(self, count: int) -> None:
        wait_until(lambda: len(self.steps) >= count or self.ended.is_set(), 30, f"{count} points", poll=0.02)


class TestEvents:
    def test_history_then_live_points_once_each_in_order_then_the_end(self, live: Live) -> None:
        job_id = live.submit()
        live.store(job_id, range(0, 30))
        watcher = Watcher(live, job_id).start()
        watcher.wait_for_steps(30)
        for batch in (range(30, 45), range(45, 2600)):  # the second is more than a page (1000) at once
            live.store(job_id, batch)
            watcher.wait_for_steps(batch[-1] + 1)
        assert not watcher.ended.is_set()
        live.store(job_id, range(2600, 2610), status=JobStatus.SUCCEEDED)
        assert watcher.ended.wait(30), "the stream did not end with the job"
        assert watcher.error is None, watcher.error
        assert watcher.steps == list(range(2610))
        assert watcher.statuses[0] == "queued" or watcher.statuses[0] == "running"
        assert watcher.statuses[-1] == "succeeded"

    def test_last_event_id_resumes_after_that_step(self, live: Live) -> None:
        job_id = live.submit()
        live.store(job_id, range(0, 50), status=JobStatus.SUCCEEDED)
        watcher = Watcher(live, job_id, last_event_id=19).start()
        assert watcher.ended.wait(30) and watcher.error is None, watcher.error
        assert watcher.steps == list(range(20, 50)) and watcher.statuses == ["succeeded"]
        with live.client() as client:  # a finished job's stream is its history and its status
            job = client.follow(job_id, timeout=30)
        assert job["status"] == "succeeded"

    def test_an_idle_stream_sends_heartbeat_comments(self, live: Live) -> None:
        job_id = live.submit()
        lines: list[str] = []
        with httpx.stream("GET", f"{live.url}/v1/jobs/{job_id}/events", headers=live.headers, timeout=30) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            for line in response.iter_lines():
                lines.append(line)
                if lines.count(": heartbeat") >= 2:
                    break
        assert "event: status" in lines

    def test_many_streams_share_one_poller_and_hold_no_connection(self, live: Live) -> None:
        job_id = live.submit()
        live.store(job_id, range(0, 10))
        watchers = [Watcher(live, job_id).start() for _ in range(30)]
        for watcher in watchers:  # connected (each request's own session has closed) and caught up
            watcher.wait_for_steps(10)
        engine = live.app.state.runtime.engine
        hub = live.app.state.runtime.events
        checked_out: list[int] = []
        for start in range(10, 210, 20):
            live.store(job_id, range(start, start + 20))
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline:
                checked_out.append(engine.pool.checkedout())
                time.sleep(0.01)
        for watcher in watchers:
            watcher.wait_for_steps(210)
        assert hub.watched_jobs == 1
        live.store(job_id, range(210, 211), status=JobStatus.CANCELLED)
        for watcher in watchers:
            assert watcher.ended.wait(30) and watcher.error is None, watcher.error
            assert watcher.steps == list(range(211)) and watcher.statuses[-1] == "cancelled"
        # 30 open streams, read by one poller: at most READ_CONCURRENCY connections at any moment, not 30.
        assert max(checked_out) <= READ_CONCURRENCY, max(checked_out)
        wait_until(lambda: hub.watched_jobs == 0, 10, "the poller to stop with its last stream")

    def test_auth_a_session_cookie_works_and_other_users_jobs_are_404(self, live: Live) -> None:
        job_id = live.submit()
        live.store(job_id, range(0, 5), status=JobStatus.SUCCEEDED)
        with httpx.Client(base_url=live.url, timeout=30) as browser:
            assert browser.get(f"/v1/jobs/{job_id}/events").status_code == 401
            assert browser.post("/ui/login", data={"api_key": live.key}).status_code == 303
            with browser.stream("GET", f"/v1/jobs/{job_id}/events") as response:
                body = response.read().decode()
            assert response.status_code == 200 and "event: metrics" in body and '"status":"succeeded"' in body
        with live.app.state.runtime.sessions.begin() as s:
            from api.services.keys import create_key

            _, other = create_key(s, "other")
        with NarrownetClient(live.url, other) as client, pytest.raises(ApiError) as refused:
            list(client.events(job_id))
        assert refused.value.status_code == 404
        bad = httpx.get(f"{live.url}/v1/jobs/{job_id}/events", headers={**live.headers, "Last-Event-ID": "x"})
        assert bad.status_code == 422 and bad.json()["error"]["fields"][0]["field"] == "header.Last-Event-ID"
