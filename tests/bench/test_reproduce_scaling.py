"""Smoke test of bench/reproduce_scaling.py (--quick, all three families), run as the command a user runs."""

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.grids import describe, edge_hits
from bench.v_family import shallow_v_set
from narrownet.client import NarrownetClient
from narrownet.cluster import Serve
from trainer.grid import expand, parse_sweep_file

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("scaling")
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "reproduce_scaling.py"), "--quick", "--out", str(out),
                          "--families", "regular,constrained,constrained_v", "--processes", "1"],
                         check=True, cwd=ROOT, capture_output=True, text=True, timeout=300)
    return out, run.stdout, json.loads((out / "scaling.quick.json").read_text())


def test_the_reading_is_printed_before_any_result_and_judged_after(quick):
    out, stdout, report = quick
    assert stdout.startswith("Reading, fixed before the run")
    assert report["verdict"]["verdict"] in {"HOLDS", "NOT SEEN at this scale"}
    assert len(report["verdict"]["checks"]) == 3
    md = (out / "scaling.quick.md").read_text()
    assert f"**Verdict: {report['verdict']['verdict']}.**" in md
    assert (out / "scaling.quick.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_group_ran_its_final_grid_once_per_seed(quick):
    _, _, report = quick
    for g in report["groups"]:
        mine = [e for e in report["entries"] if (e["n"], e["family"]) == (g["n"], g["family"])]
        ran = [(e["lr_hidden"], e["lr_outer"], e["seed"]) for e in mine]
        assert len(ran) == len(set(ran))
        assert set(ran) == set(itertools.product(g["grid"]["lr_hidden"], g["grid"]["lr_outer"], g["seeds"]))


def test_the_sweeps_saved_as_data_rebuild_exactly_the_runs(quick):
    _, _, report = quick
    configs = []
    for body in report["sweeps"]:  # each one the file `narrownet sweep` and POST /v1/sweeps take
        sweep = parse_sweep_file(body)
        for config in expand(sweep):
            spec = config.spec
            family = "regular" if spec.regime == "regular" else (
                "constrained_v" if spec.constraint.zeta is not None else "constrained")
            configs.append((spec.data.n, family, spec.optim.lr_hidden, spec.optim.lr_outer, spec.seed))
    entries = [(e["n"], e["family"], e["lr_hidden"], e["lr_outer"], e["seed"]) for e in report["entries"]]
    assert sorted(configs) == sorted(entries)


def test_winners_and_their_edges_are_reported_as_the_entries_say(quick):
    _, _, report = quick
    for g in report["groups"]:
        grid = {k: tuple(v) for k, v in g["grid"].items()}
        for seed, stats in g["stats"]["per_seed"].items():
            mine = [e for e in report["entries"]
                    if (e["n"], e["family"], e["seed"]) == (g["n"], g["family"], int(seed))]
            best = min(mine, key=lambda e: e["train_loss"] if e["train_loss"] is not None else float("inf"))
            assert (stats["best_loss"], stats["lr_hidden"], stats["lr_outer"]) == (
                best["train_loss"], best["lr_hidden"], best["lr_outer"])
            hits = edge_hits(grid, {"lr_hidden": best["lr_hidden"], "lr_outer": best["lr_outer"]})
            assert stats["edge"] == describe(hits)
            left = f"seed {seed}" in g["unresolved"] or f"seed {seed}" in g["at_floor"]
            assert left == bool(hits)  # an edge winner is never silently dropped
        if g["rounds"] < report["setting"]["max_rounds"]:  # growth stopped early only because all were interior
            assert g["unresolved"] == {}


def test_the_v_family_uses_zeta_and_gamma_from_its_seeds_init_and_stays_in_v(quick):
    _, _, report = quick
    d = report["base"]["data"]["d"]
    v_entries = [e for e in report["entries"] if e["family"] == "constrained_v"]
    assert v_entries
    for e in v_entries:
        zeta, gamma = shallow_v_set(e["width"], d, e["seed"])
        assert (e["zeta"], e["gamma"]) == (zeta, gamma)
        assert e["v_min"] >= zeta * (1 - 1e-6) and e["v_ratio"] <= gamma * (1 + 1e-5)
        assert 0 <= e["v_projected_steps"] <= report["setting"]["iterations"]
    assert all(e["zeta"] is None and "v_projected_steps" not in e for e in report["entries"]
               if e["family"] != "constrained_v")


def test_replot_rebuilds_the_same_report_from_the_json_alone(quick):
    out, _, report = quick
    md = (out / "scaling.quick.md").read_text()
    (out / "scaling.quick.md").unlink()
    subprocess.run([sys.executable, str(ROOT / "bench" / "reproduce_scaling.py"), "--replot", "scaling.quick",
                    "--out", str(out)], check=True, cwd=ROOT, capture_output=True, timeout=120)
    assert (out / "scaling.quick.md").read_text() == md
    again = json.loads((out / "scaling.quick.json").read_text())
    assert again["verdict"] == report["verdict"] and again["entries"] == report["entries"]
    assert again["sweeps"] == report["sweeps"]


@pytest.mark.slow  # starts `narrownet serve` (API, worker, reconciler) and trains the quick grids through it
def test_url_mode_submits_the_same_sweep_files_and_gets_the_local_numbers(quick, tmp_path):
    _, _, mine = quick
    served = Serve(tmp_path / "home", {"NARROWNET_WORKER_TORCH_THREADS": "1"})  # as the local run: 1 torch thread
    key = served.start()
    try:
        subprocess.run([sys.executable, str(ROOT / "bench" / "reproduce_scaling.py"), "--quick", "--out", str(tmp_path),
                        "--families", "regular,constrained,constrained_v", "--processes", "2", "--url", served.url,
                        "--key", key], check=True, cwd=ROOT, capture_output=True, text=True, timeout=600)
        with NarrownetClient(served.url, key) as client:
            submitted = client.sweeps(limit=200)
    finally:
        served.stop()
    theirs = json.loads((tmp_path / "scaling.quick.json").read_text())
    assert theirs["url"] == served.url and submitted["total"] == len(theirs["sweeps"])
    assert theirs["sweeps"] == mine["sweeps"]  # one format: the files the local run trained are the ones submitted
    assert theirs["entries"] == mine["entries"]  # bit for bit, loss histories included
    assert theirs["verdict"] == mine["verdict"]
    assert [g["stats"] for g in theirs["groups"]] == [g["stats"] for g in mine["groups"]]
