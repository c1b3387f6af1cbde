"""Smoke test of bench/reproduce_mnist.py: --quick with the V-on family, then --replot from the JSON alone."""

import json
import subprocess
import sys
from pathlib import Path

from bench.reproduce_mnist import QUICK, job_spec
from bench.v_family import v_set_from
from trainer.data import load_data
from trainer.deep import build_model

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = str(ROOT / "bench" / "reproduce_mnist.py")


def test_quick_run_with_v_switched_on_then_replot(tmp_path):
    cells = "regular:inf,constrained:inf,constrained_v:inf"
    subprocess.run([sys.executable, SCRIPT, "--quick", "--out", str(tmp_path), "--cells", cells], check=True,
                   cwd=ROOT, capture_output=True, timeout=300)
    report = json.loads((tmp_path / "mnist.quick.json").read_text())
    assert [tuple(c) for c in report["setting"]["cells"]] == [("regular", None), ("constrained", None),
                                                              ("constrained_v", None)]
    assert len(report["runs"]) == len(QUICK.widths) * 3 * len(QUICK.seeds)
    data = load_data(job_spec(QUICK, "regular", None, QUICK.widths[0], 0).data)
    for r in (r for r in report["runs"] if r["regime"] == "constrained_v"):
        spec = job_spec(QUICK, "constrained", None, r["width"], r["seed"])
        zeta, gamma = v_set_from(build_model(spec, data.input_shape, 10).out.weight)
        assert (r["zeta"], r["gamma"]) == (zeta, gamma)
        f = r["final"]
        assert f["v_min"] >= zeta * (1 - 1e-6) and f["v_ratio"] <= gamma * (1 + 1e-5)
        assert 0 <= f["v_projected_steps"] <= r["total_steps"]
    md = (tmp_path / "mnist.quick.md").read_text()
    assert "## V switched on" in md and "steps at which P_V bound" in md
    assert "constrained_v, r=inf − constrained, r=inf" in md

    png = (tmp_path / "mnist.quick.png").read_bytes()
    (tmp_path / "mnist.quick.png").unlink()
    subprocess.run([sys.executable, SCRIPT, "--replot", "mnist.quick", "--out", str(tmp_path)], check=True, cwd=ROOT,
                   capture_output=True, timeout=120)
    assert (tmp_path / "mnist.quick.md").read_text() == md  # tables come from the JSON alone
    assert (tmp_path / "mnist.quick.png").read_bytes()[:8] == png[:8] == b"\x89PNG\r\n\x1a\n"
