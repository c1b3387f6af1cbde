"""Sweeps end to end, over HTTP, against a real uvicorn server and a real Celery worker process, on both backends
(embedded SQLite + SQLite broker, PostgreSQL + Redis): packs trained as one program, each config an ordinary job,
a config that diverges failing alone, a sweep cancel, another user's sweep, bad grids, the CLI."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from narrownet.client import ApiError, NarrownetClient
from tests.e2e.conftest import Stack
from tests.e2e.test_service import JOB_DEADLINE, wait_for_status

pytestmark = pytest.mark.service

BASE = {"name": "e2e-sweep", "regime": "constrained", "model": {"arch": "shallow", "width": 8},
        "data": {"source": "synthetic", "n": 32, "d": 4, "seed": 2},
        "optim": {"name": "gd", "momentum": 0.9, "lr": 0.1, "iterations": 200},
        "metrics_every": 50, "checkpoint_every": 100}


def sweep_body(name: str, grid: dict[str, list[Any]], **base: Any) -> dict[str, Any]:
    return {"name": name, "base": {**BASE, **base}, "grid": grid, "objective": {"metric": "train_loss", "mode": "min"}}


def finish(client: NarrownetClient, sweep_id: str) -> dict[str, Any]:
    return client.wait_sweep(sweep_id, timeout=JOB_DEADLINE * 2, poll_interval=0.3)


def test_a_sweep_trains_in_packs_and_each_config_is_a_job_that_matches_its_lone_run(
        stack: Stack, alice: NarrownetClient, tmp_path: Path):
    grid = {"regime": ["regular", "constrained"], "constraint.radius": [1.0, None], "optim.lr_hidden": [0.05, 0.5]}
    sweep = alice.submit_sweep(sweep_body("e2e-fig4", grid))
    assert (sweep["n_configs"], sweep["status"]) == (8, "queued")
    assert [len(p["job_ids"]) for p in sweep["packs"]] == [4, 4] and all(p["vectorized"] for p in sweep["packs"])
    # The same configs alone, for comparison (each an ordinary job).
    lone = {i: alice.submit({**BASE, "name": f"e2e-lone-{i}", "regime": p["regime"],
                             "constraint": {"radius": p["constraint.radius"]},
                             "optim": {**BASE["optim"], "lr": None, "lr_hidden": p["optim.lr_hidden"],
                                       "lr_outer": 0.1}})["id"]
            for i, p in ((0, {"regime": "regular", "constraint.radius": 1.0, "optim.lr_hidden": 0.05}),
                         (7, {"regime": "constrained", "constraint.radius": None, "optim.lr_hidden": 0.5}))}

    done = finish(alice, sweep["id"])
    assert done["status"] == "succeeded" and done["counts"]["succeeded"] == 8 and done["progress"] == 1.0
    results = alice.sweep_results(sweep["id"])
    assert [r["job_id"] for r in results["items"]] == sweep["job_ids"]
    for row in results["items"]:
        job = alice.job(row["job_id"])
        assert (job["status"], job["sweep_id"], job["params"]) == ("succeeded", sweep["id"], row["params"])
        assert [p["step"] for p in alice.metrics(row["job_id"])["points"]] == [0, 50, 100, 150, 200]
        meta = alice.checkpoint_meta(row["job_id"])
        assert meta["step"] == 200 and meta["final_train_loss"] == pytest.approx(row["final_metrics"]["train_loss"])
    for index, job_id in lone.items():
        alone = alice.wait(job_id, timeout=JOB_DEADLINE, poll_interval=0.2)["final_metrics"]["train_loss"]
        assert results["items"][index]["final_metrics"]["train_loss"] == pytest.approx(alone, rel=1e-5)
    assert done["best"]["value"] == min(r["final_metrics"]["train_loss"] for r in results["items"])
    assert {j["id"] for j in alice.jobs(sweep_id=sweep["id"], limit=200)["items"]} == set(sweep["job_ids"])
    assert "narrownet.run_pack" in stack.logs["worker"].read_text()

    table = alice.sweep_summary(sweep["id"], rows="constraint.radius", cols="optim.lr_hidden", split="regime")
    assert [p["split"] for p in table["panels"]] == ["regular", "constrained"]
    assert all(cell["job_id"] in sweep["job_ids"] for p in table["panels"] for line in p["cells"] for cell in line)
    image = alice.sweep_heatmap(sweep["id"], tmp_path / "fig4.png", rows="constraint.radius",
                                cols="optim.lr_hidden", split="regime")
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.reader(io.StringIO(alice.sweep_results_csv(sweep["id"]))))
    assert len(rows) == 9 and rows[0][:6] == ["index", "job_id", "status", *grid]


def test_a_diverging_config_fails_alone_while_its_pack_succeeds(alice: NarrownetClient):
    grid = {"optim.lr_hidden": [0.05, 100.0], "optim.lr_outer": [0.05, 100.0]}
    sweep = alice.submit_sweep(sweep_body("e2e-diverge", grid, regime="regular", metrics_every=1,
                                          model={"arch": "shallow", "width": 8, "activation": "relu"}))
    assert len(sweep["packs"]) == 1
    done = finish(alice, sweep["id"])
    items = alice.sweep_results(sweep["id"])["items"]
    failed = [r for r in items if r["status"] == "failed"]
    assert items[0]["status"] == "succeeded" and failed
    assert all(r["error"].startswith("TrainingDiverged: training diverged at step") for r in failed)
    assert done["status"] == "succeeded" and done["counts"]["failed"] == len(failed)
    assert done["best"]["status"] == "succeeded" and done["best"]["job_id"] not in {r["job_id"] for r in failed}
    points = alice.metrics(items[0]["job_id"])["points"]
    assert [p["step"] for p in points] == list(range(201))  # the healthy config ran to the end, every step once


def test_cancelling_a_sweep_ends_every_unfinished_config(alice: NarrownetClient):
    grid = {"optim.lr_hidden": [0.01, 0.02], "seed": [1, 2]}
    sweep = alice.submit_sweep(sweep_body("e2e-cancel", grid, metrics_every=1000, checkpoint_every=None,
                                          optim={"name": "gd", "lr": 0.01, "iterations": 5_000_000}))
    wait_for_status(alice, sweep["job_ids"][0], {"running"}, also=lambda job: job["step"] > 0)
    cancelled = alice.cancel_sweep(sweep["id"])
    assert cancelled["cancel_requested"] is True
    done = finish(alice, sweep["id"])
    assert done["status"] == "cancelled" and done["counts"]["cancelled"] == 4
    for job_id in sweep["job_ids"]:
        job = alice.job(job_id)
        assert job["status"] == "cancelled" and 0 < job["step"] < 5_000_000
        assert alice.checkpoint_meta(job_id)["step"] == job["step"]  # the last checkpoint is kept
    assert alice.cancel_sweep(sweep["id"])["status"] == "cancelled"  # idempotent


def test_another_users_sweep_is_404(alice: NarrownetClient, bob: NarrownetClient):
    sweep = alice.submit_sweep(sweep_body("e2e-private-sweep", {"seed": [1, 2]}, optim={
        "name": "gd", "lr": 0.1, "iterations": 20}))
    for call in (lambda: bob.sweep(sweep["id"]), lambda: bob.sweep_results(sweep["id"]),
                 lambda: bob.cancel_sweep(sweep["id"]), lambda: bob.sweep_summary(sweep["id"]),
                 lambda: bob.job(sweep["job_ids"][0])):
        with pytest.raises(ApiError) as denied:
            call()
        assert denied.value.status_code == 404
    assert sweep["id"] not in {s["id"] for s in bob.sweeps()["items"]}
    assert finish(alice, sweep["id"])["status"] == "succeeded"


def test_bad_grids_are_422_naming_axis_value_and_reason(stack: Stack, alice: NarrownetClient,
                                                        keys: dict[str, str], tmp_path: Path):
    with pytest.raises(ApiError) as rejected:
        alice.submit_sweep(sweep_body("e2e-bad", {"model.width": [8, 21], "optim.lr_hidden": [0.1, -2]}))
    assert rejected.value.status_code == 422
    assert {f["field"]: f["reason"] for f in rejected.value.fields} == {
        "grid.model.width[1]": "21 must be even in the constrained regime (it pairs neurons)",
        "grid.optim.lr_hidden[1]": "-2 is invalid: Input should be greater than 0"}
    (tmp_path / "bad.json").write_text(json.dumps(sweep_body("e2e-bad", {"model.depth": [2]})))
    result = stack.cli("sweep", "submit", str(tmp_path / "bad.json"), "--key", keys["alice"], check=False)
    assert result.returncode == 1 and "grid.model.depth: unknown axis; allowed:" in " ".join(result.stderr.split())


def test_cli_submit_wait_then_results_summary_heatmap(stack: Stack, keys: dict[str, str],
                                                      tmp_path: Path):
    body = sweep_body("e2e-cli-sweep", {"regime": ["regular", "constrained"], "optim.lr_hidden": [0.05, 0.2]},
                      optim={"name": "gd", "lr": 0.1, "iterations": 60}, metrics_every=20, checkpoint_every=None)
    (tmp_path / "sweep.json").write_text(json.dumps(body))
    key = ["--key", keys["alice"]]
    submitted = stack.cli("sweep", "submit", str(tmp_path / "sweep.json"), "--wait", "--json", *key)
    sweep = json.loads(submitted.stdout)
    assert sweep["status"] == "succeeded" and "best train_loss=" in submitted.stderr
    said = stack.cli("sweep", "submit", str(tmp_path / "sweep.json"), "--wait", *key).stdout
    assert said.startswith("submitted sweep ") and ": succeeded (4 succeeded)" in said  # a summary, not JSON
    results = json.loads(stack.cli("sweep", "results", sweep["id"], "--json", *key).stdout)
    assert [r["status"] for r in results["items"]] == ["succeeded"] * 4
    text = stack.cli("sweep", "summary", sweep["id"], "--rows", "regime", "--cols", "optim.lr_hidden", *key).stdout
    assert "regime" in text and "0.05" in text
    stack.cli("sweep", "heatmap", sweep["id"], "-o", str(tmp_path / "h.svg"), *key)
    assert b"<svg" in (tmp_path / "h.svg").read_bytes()
    local = stack.cli("sweep", str(tmp_path / "sweep.json"), "-o", str(tmp_path / "local.json"))
    assert local.returncode == 0
    here = json.loads((tmp_path / "local.json").read_text())["items"]
    assert [r["params"] for r in here] == [r["params"] for r in results["items"]]
    for mine, theirs in zip(here, results["items"], strict=True):
        assert mine["final_metrics"]["train_loss"] == pytest.approx(theirs["final_metrics"]["train_loss"], rel=1e-5)
