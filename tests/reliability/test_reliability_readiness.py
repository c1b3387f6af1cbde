"""/readyz with the database (a throwaway PostgreSQL cluster, stopped) and then the broker (our redis-server, killed)
down: the unauthenticated answer says which is down, and nothing about where it runs or what the driver said;
those details go to the API's log."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from core.db.migrate import upgrade
from narrownet.cluster import Cluster, PostgresCluster, RedisServer
from tests.reliability.conftest import SETTINGS

pytestmark = pytest.mark.service


def assert_names_nothing_about_where(answer: httpx.Response, *secrets: str) -> None:
    for secret in ("127.0.0.1", "localhost", "postgres", "psycopg", "redis", "connection", "refused", *secrets):
        assert secret.lower() not in answer.text.lower(), (secret, answer.text)


def test_readyz_says_what_is_down_and_logs_the_details(postgres: PostgresCluster, redis_server: RedisServer,
                                                       tmp_path: Path):
    url = postgres.create_database("narrownet")
    upgrade(url)
    redis_server.flush()
    cluster = Cluster(tmp_path / "home", url, redis_server.url(), SETTINGS)
    cluster.home.mkdir()
    try:
        cluster.start_api()
        cluster.wait_api()
        ready = httpx.get(f"{cluster.url}/readyz", timeout=30)
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"database": "ok", "broker": "ok", "artifacts": "ok"}

        postgres.stop("fast")
        answer = httpx.get(f"{cluster.url}/readyz", timeout=30)
        assert answer.status_code == 503 and answer.headers["Retry-After"].isdigit()
        assert answer.json()["error"] == {"code": "not_ready", "message": "not ready: database unreachable"}
        assert_names_nothing_about_where(answer, str(postgres.port))

        redis_server.kill()
        answer = httpx.get(f"{cluster.url}/readyz", timeout=30)
        assert answer.status_code == 503
        assert answer.json()["error"]["message"] == "not ready: broker unreachable; database unreachable"
        assert_names_nothing_about_where(answer, str(postgres.port), str(redis_server.port))

        log = cluster.log_text("api")
        assert "readiness: database check failed" in log and str(postgres.port) in log
        assert "readiness: broker check failed" in log
    finally:
        cluster.stop()
        if redis_server.process is None:
            redis_server.start()  # shared by the session's other tests
