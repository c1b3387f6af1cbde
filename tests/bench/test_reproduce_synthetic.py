"""Smoke test of the synthetic reproduction: the --quick path, run as the command a user runs."""

import itertools
import json
import subprocess
import sys
from pathlib import Path

from bench.grids import describe, edge_hits
from bench.v_family import shallow_v_set

ROOT = Path(__file__).resolve().parents[2]


def test_quick_run_writes_one_entry_per_cell_and_config_of_each_grown_grid(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "bench" / "reproduce_synthetic.py"), "--quick", "--out", str(tmp_path),
                    "--processes", "1"], check=True, cwd=ROOT, capture_output=True, timeout=300)

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
