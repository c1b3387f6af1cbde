"""Plans and reuse against a real stack: a reused result is bit for bit the result of training the spec again, and
once a worker has history, a planned run's estimated time is within a factor of 2 of the time it then takes."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load_file

from narrownet.client import NarrownetClient
from tests.e2e.conftest import Stack

pytestmark = pytest.mark.service

JOB_DEADLINE = 300.0


def shallow(name: str, *, width: int, n: int, d: int, iterations: int, seed: int) -> dict[str, Any]:
    return {"name": name, "regime": "constrained", "model": {"arch": "shallow", "width": width},
            "data": {"source": "synthetic", "n": n, "d": d, "seed": seed},
            "optim": {"name": "gd", "lr": 0.2, "momentum": 0.9, "iterations": iterations},
            "constraint": {"radius": 4.0}, "metrics_every": 100, "seed": seed, "device": "cpu"}


def run(client: NarrownetClient, spec: dict[str, Any]) -> dict[str, Any]:
    done = client.wait(client.submit(spec)["id"], timeout=JOB_DEADLINE, poll_interval=0.2)
    assert done["status"] == "succeeded", done.get("error")
    return done


def seconds_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def test_a_reused_result_equals_a_fresh_run_bit_for_bit(stack: Stack, alice: NarrownetClient,
                                                        bob: NarrownetClient, tmp_path: Path) -> None:
    spec = shallow("reuse-determinism", width=16, n=64, d=8, iterations=400, seed=11)
    first = run(alice, spec)

    reused = alice.submit(spec, reuse=True)
    assert reused.get("reused") is True and reused["id"] == first["id"] and reused["status"] == "succeeded"
    assert alice.jobs(spec_hash=first["spec_hash"])["total"] == 1  # nothing new was made

    fresh = run(alice, spec)  # without reuse: the same spec trained again, on the same kind of worker
    assert fresh["id"] != first["id"] and fresh["spec_hash"] == first["spec_hash"]
    tensors = {}
    for job in (first, fresh):
        alice.fetch_checkpoint(job["id"], tmp_path / f"{job['id']}.safetensors")
        tensors[job["id"]] = load_file(tmp_path / f"{job['id']}.safetensors")
        assert alice.checkpoint_meta(job["id"])["spec_hash"] == first["spec_hash"]
    a, b = tensors[first["id"]], tensors[fresh["id"]]
    assert set(a) == set(b) and {"W", "v", "W0"} <= set(a)
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape
        assert a[name].numpy().tobytes() == b[name].numpy().tobytes(), name

    # Another user with the same spec trains it: results are not shared across users.
    theirs = bob.submit(spec, reuse=True)
    assert not theirs.get("reused") and theirs["id"] != first["id"]
    bob.cancel(theirs["id"])


def test_a_planned_run_time_is_within_a_factor_of_two_of_the_measured_one(stack: Stack,
                                                                          alice: NarrownetClient) -> None:
    # History: two runs with the same size of step as the planned one (half as many steps).
    for seed in (1, 2):
        run(alice, shallow(f"history-{seed}", width=96, n=1024, d=48, iterations=1000, seed=seed))
    planned_spec = shallow("planned", width=96, n=1024, d=48, iterations=2000, seed=3)
    plan = alice.plan(planned_spec)
    estimate = plan["estimate"]
    assert estimate["seconds"] is not None, estimate
    assert estimate["samples"] >= 2 and estimate["devices"] == ["cpu"]

    done = run(alice, planned_spec)
    measured = seconds_between(done["started_at"], done["finished_at"])
    ratio = estimate["seconds"] / measured
    assert 0.5 <= ratio <= 2.0, f"estimated {estimate['seconds']:.2f} s, measured {measured:.2f} s"


def test_cli_plan_and_submit_reuse(stack: Stack, keys: dict[str, str], tmp_path: Path) -> None:
    key = ["--key", keys["alice"]]
    example = Path(__file__).resolve().parents[2] / "examples" / "constrained.json"
    shown = stack.cli("plan", str(example), *key).stdout
    assert "narrow: 2n/d <= m < n" in shown and "m = 40, n = 200, d = 20, 2n/d = 20" in shown
    as_json = json.loads(stack.cli("plan", str(example), "--json", *key).stdout)
    assert as_json["width"]["verdict"] == "narrow: 2n/d <= m < n" and as_json["queue"]["name"] == "cpu"

    path = tmp_path / "spec.json"
    path.write_text(json.dumps(shallow("cli-reuse", width=8, n=32, d=4, iterations=50, seed=5)))
    first = stack.cli("submit", str(path), "--wait", *key).stdout.splitlines()[0]
    assert first.startswith("submitted job ")
    again = stack.cli("submit", str(path), "--reuse", *key).stdout.splitlines()[0]
    assert again == first.replace("submitted job", "reused job").replace("queued", "succeeded")
    job_id = first.split()[2]
    digest = json.loads(stack.cli("status", job_id, "--json", *key).stdout)["spec_hash"]
    listed = json.loads(stack.cli("list", "--spec-hash", digest, "--json", *key).stdout)
    assert [item["id"] for item in listed["items"]] == [job_id]

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**json.loads(path.read_text()), "model": {"arch": "shallow", "width": 7}}))
    refused = stack.cli("plan", str(bad), *key, check=False)
    assert refused.returncode == 1 and "model.width" in refused.stderr
