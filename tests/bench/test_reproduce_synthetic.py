"""Smoke test of the synthetic reproduction: the --quick path, run as the command a user runs, here and through a
running service (--url: the grids as sweeps)."""

import itertools
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.grids import describe, edge_hits
from bench.v_family import shallow_v_set
from narrownet.client import NarrownetClient
from narrownet.cluster import Serve

ROOT = Path(__file__).resolve().parents[2]


def quick(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "bench" / "reproduce_synthetic.py"), "--quick", "--out", str(out),
                           *args], check=True, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_quick_run_writes_one_entry_per_cell_and_config_of_each_grown_grid(tmp_path):
    quick(tmp_path, "--processes", "1")

    for name in ("synthetic.json", "synthetic.md", "synthetic.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    report = json.loads((tmp_path / "synthetic.json").read_text())
    s = report["setting"]
    assert set(report["families"]) == {"constrained", "constrained_v", "regular"}
    got = [(e["width"], e["family"], e["radius"], e["lr_hidden"], e["lr_outer"], e["seed"]) for e in report["entries"]]
    expected = {(row["width"], row["family"], r, lr_h, lr_o, seed) for row in report["rows"]
                for r, lr_h, lr_o, seed in itertools.product(s["radii"], row["grid"]["lr_hidden"],
                                                             row["grid"]["lr_outer"], s["seeds"])}
    assert len(got) == len(expected) and set(got) == expected
    assert {(row["width"], row["family"]) for row in report["rows"]} == set(itertools.product(s["widths"],
                                                                                              report["families"]))

    for e in report["entries"]:
        if e["train_loss"] is not None:  # a diverged config's history ends at its last finite loss
            assert e["loss_history"][-1] == [s["iterations"], e["train_loss"]]
        if e["radius"] is not None:  # the projection keeps W inside the ball
            assert e["w_dist"] <= e["radius"] * (1 + 1e-5)
        if e["family"] == "constrained_v":  # V from this seed's init, and v stays in it
            zeta, gamma = shallow_v_set(e["width"], s["d"], e["seed"])
            assert (e["zeta"], e["gamma"]) == (zeta, gamma)
            assert e["v_min"] >= zeta * (1 - 1e-6) and e["v_ratio"] <= gamma * (1 + 1e-5)
    # Mirrored init: the output is 0 at every width, so every constrained run starts at the same loss 0.5 mean y^2.
    assert len({e["loss_history"][0][1] for e in report["entries"] if e["regime"] == "constrained"}) == 1

    md = (tmp_path / "synthetic.md").read_text()
    row = next(r for r in report["rows"] if (r["width"], r["family"]) == (s["widths"][0], "regular"))
    mine = [e for e in report["entries"] if (e["width"], e["family"], e["radius"]) == (row["width"], "regular", None)]
    best = min(mine, key=lambda e: e["train_loss"])
    assert f"{best['train_loss']:.2e}" in md  # the table reports the minimum over the grid
    hits = edge_hits({k: tuple(v) for k, v in row["grid"].items()},
                     {"lr_hidden": best["lr_hidden"], "lr_outer": best["lr_outer"]})
    assert f"| {best['lr_outer']:g} | {describe(hits)}" in md  # and where its winner sits on the grid
    assert bool(hits) == ("r=inf seed 0" in row["unresolved"] or "r=inf seed 0" in row["at_floor"])
    assert "### V switched on" in md
    assert (tmp_path / "synthetic.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def without_times(md: str) -> str:
    """The report less what depends on the clock, the machine's load and the command line."""
    tables = md[md.index("### Best final training loss"):]
    return re.sub(r"\(\d+ s\)", "", tables)


@pytest.mark.slow  # starts `narrownet serve` (API, worker, reconciler) and trains the quick grid through it: ~30 s
def test_url_mode_runs_the_grids_as_sweeps_of_a_service_with_the_local_numbers(tmp_path):
    local, remote = tmp_path / "local", tmp_path / "remote"
    quick(local, "--processes", "1")
    served = Serve(tmp_path / "home", {"NARROWNET_WORKER_TORCH_THREADS": "1"})  # as the local run: 1 torch thread
    key = served.start()
    try:
        quick(remote, "--processes", "2", "--url", served.url, "--key", key)
        with NarrownetClient(served.url, key) as client:
            sweeps = client.sweeps(limit=200)
            quick(tmp_path / "again", "--processes", "2", "--url", served.url, "--key", key)
            assert client.sweeps(limit=200)["total"] == sweeps["total"]  # the same command attaches to its sweeps
    finally:
        served.stop()

    assert sweeps["total"] > 0 and all(s["status"] == "succeeded" for s in sweeps["items"])
    mine, theirs = (json.loads((out / "synthetic.json").read_text()) for out in (local, remote))
    assert theirs["url"] == served.url
    # The same packs on one torch thread: every config's final metrics and loss history are bit for bit the same.
    assert theirs["entries"] == mine["entries"]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in theirs["rows"]] == [
        {k: v for k, v in r.items() if k != "seconds"} for r in mine["rows"]]
    assert len(theirs["entries"]) == sum(s["n_configs"] for s in sweeps["items"])
    assert without_times((remote / "synthetic.md").read_text()) == without_times((local / "synthetic.md").read_text())
    assert (remote / "synthetic.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
