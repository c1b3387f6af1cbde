"""Sweep plans and per-config reuse end to end, over HTTP and the CLI, against a real uvicorn server and a real
Celery worker on both backends: a finished sweep resubmitted with reuse trains nothing and answers the same results,
a partly overlapping grid trains only its new configs, another user's identical sweep trains."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from narrownet.client import NarrownetClient
from tests.e2e.conftest import Stack
from tests.e2e.test_sweeps import finish, sweep_body

pytestmark = pytest.mark.service

GRID = {"regime": ["regular", "constrained"], "optim.lr_hidden": [0.05, 0.2]}


def body(grid: dict[str, list[Any]] = GRID) -> dict[str, Any]:
    return sweep_body("e2e-reuse", grid, optim={"name": "gd", "lr": 0.1, "iterations": 60}, metrics_every=20,
                      checkpoint_every=None)


def outcomes(client: NarrownetClient, sweep_id: str) -> list[tuple[dict[str, Any], str, dict[str, Any]]]:
    return [(r["params"], r["status"], r["final_metrics"]) for r in client.sweep_results(sweep_id)["items"]]


def test_a_finished_sweep_resubmitted_with_reuse_trains_nothing_and_answers_the_same(
        stack: Stack, alice: NarrownetClient, keys: dict[str, str], tmp_path: Path) -> None:
    first = finish(alice, alice.submit_sweep(body())["id"])
    assert first["status"] == "succeeded"
    first_ids = [r["job_id"] for r in alice.sweep_results(first["id"])["items"]]
    (tmp_path / "sweep.json").write_text(json.dumps(body()))
    key = ["--key", keys["alice"]]
    sweeps_before = alice.sweeps()["total"]

    planned = stack.cli("plan", str(tmp_path / "sweep.json"), "--reuse", *key).stdout
    assert "to train: 0 in 0 pack(s); reused: 4 (already trained)" in planned
    dry = json.loads(stack.cli("sweep", "submit", str(tmp_path / "sweep.json"), "--dry-run", "--json", *key).stdout)
    assert (dry["totals"]["to_train"], [p["size"] for p in dry["packs"]]) == (4, [2, 2])
    assert [c["reusable_job_id"] for c in dry["configs"]] == first_ids
    assert dry["packs"][1]["apart_because"].startswith("differs from pack 0 in regime")
    assert alice.sweeps()["total"] == sweeps_before  # a plan records nothing

    again = json.loads(stack.cli("sweep", "submit", str(tmp_path / "sweep.json"), "--reuse", "--wait", "--json",
                                 *key).stdout)
    assert again["status"] == "succeeded" and again["counts"]["succeeded"] == 4
    assert outcomes(alice, again["id"]) == outcomes(alice, first["id"])
    rows = alice.sweep_results(again["id"])["items"]
    assert [r["reused_from"] for r in rows] == first_ids
    # Nothing trained: the reused configs never started on a worker, and their checkpoints are the originals'.
    job = alice.job(rows[0]["job_id"])
    assert job["attempt"] == 0 and job["reused_from"] == first_ids[0]
    assert alice.checkpoint_meta(rows[0]["job_id"]) == alice.checkpoint_meta(first_ids[0])
    assert alice.metrics(rows[0]["job_id"])["points"] == alice.metrics(first_ids[0])["points"]


def test_a_partly_overlapping_grid_trains_only_its_new_configs(stack: Stack, alice: NarrownetClient,
                                                               bob: NarrownetClient) -> None:
    finish(alice, alice.submit_sweep(body())["id"])
    wider = body({**GRID, "optim.lr_hidden": [0.05, 0.2, 0.4]})
    sweep = alice.submit_sweep(wider, reuse=True)
    assert (sweep["counts"]["succeeded"], sweep["counts"]["queued"]) == (4, 2)
    assert sum(len(p["job_ids"]) for p in sweep["packs"]) == 2
    done = finish(alice, sweep["id"])
    assert done["status"] == "succeeded"
    rows = alice.sweep_results(sweep["id"])["items"]
    trained = [r for r in rows if r["reused_from"] is None]
    assert [r["params"]["optim.lr_hidden"] for r in trained] == [0.4, 0.4]
    assert all(alice.job(r["job_id"])["attempt"] >= 1 for r in trained)

    # Bob's identical sweep trains: results are never shared across users.
    theirs = bob.submit_sweep(wider, reuse=True)
    assert theirs["counts"]["queued"] == 6 and sum(len(p["job_ids"]) for p in theirs["packs"]) == 6
    assert finish(bob, theirs["id"])["status"] == "succeeded"
    assert all(r["reused_from"] is None for r in bob.sweep_results(theirs["id"])["items"])
