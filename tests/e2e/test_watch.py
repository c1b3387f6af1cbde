"""`narrownet watch JOB_ID`: follows any job to its end over the event stream, with the live bar, on both
backends (embedded and PostgreSQL + Redis, see conftest.py)."""

from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import Stack

pytestmark = pytest.mark.service

SPEC = {"name": "watched", "regime": "constrained", "model": {"arch": "shallow", "width": 8},
        "data": {"source": "synthetic", "n": 32, "d": 4}, "optim": {"name": "gd", "lr": 0.1, "iterations": 400},
        "metrics_every": 10}


def test_watch_follows_a_job_it_did_not_submit_to_the_end(stack: Stack) -> None:
    key = stack.create_key("watcher")
    with stack.client(key) as client:
        job_id = client.submit(SPEC)["id"]
    result = stack.cli("watch", job_id, "--json", "--key", key, timeout=180)
    final = json.loads(result.stdout)
    assert final["id"] == job_id and final["status"] == "succeeded" and final["step"] == 400
    assert "succeeded" in result.stderr and "400/400 steps" in result.stderr  # the live bar's last state


def test_watch_exits_1_for_a_cancelled_job_and_names_a_missing_one(stack: Stack) -> None:
    key = stack.create_key("watcher2")
    with stack.client(key) as client:
        job_id = client.submit({**SPEC, "optim": {"name": "gd", "lr": 0.1, "iterations": 10**6}})["id"]
        client.cancel(job_id)
    cancelled = stack.cli("watch", job_id, "--json", "--key", key, check=False, timeout=180)
    assert cancelled.returncode == 1 and json.loads(cancelled.stdout)["status"] == "cancelled"
    missing = stack.cli("watch", "0" * 32, "--key", key, check=False)
    assert missing.returncode == 1 and "404" in missing.stderr and "0" * 32 in missing.stderr
