"""Every file in examples/ runs to success the way README tells a new user to run it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.conftest import Stack

pytestmark = pytest.mark.service

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
JOB_SPECS = sorted(p.name for p in EXAMPLES.glob("*.json") if "grid" not in json.loads(p.read_text()))


SWEEPS = sorted(p.name for p in EXAMPLES.glob("*.json") if "grid" in json.loads(p.read_text()))


def test_every_example_is_covered() -> None:
    assert {"constrained.json", "regular.json", "dataset.json", "mlp-mnist5k.json"} <= set(JOB_SPECS)
    assert SWEEPS == ["sweep.json"]


def test_example_sweep_succeeds_on_the_service_and_here(stack: Stack, keys: dict[str, str], tmp_path: Path) -> None:
    sweep = json.loads(stack.cli("sweep", "submit", str(EXAMPLES / "sweep.json"), "--wait", "--json", "--key",
                                 keys["alice"], timeout=300).stdout)
    assert sweep["status"] == "succeeded" and sweep["n_configs"] == 16
    assert sweep["counts"].get("succeeded") == 16
    here = stack.cli("sweep", str(EXAMPLES / "sweep.json"), "-o", str(tmp_path / "local.json"))
    assert here.returncode == 0
    assert len(json.loads((tmp_path / "local.json").read_text())["items"]) == 16


@pytest.mark.parametrize("name", JOB_SPECS)
def test_example_job_succeeds(stack: Stack, keys: dict[str, str], name: str) -> None:
    key = ["--key", keys["alice"]]
    if json.loads((EXAMPLES / name).read_text())["data"]["source"] == "dataset":
        # README: narrownet datasets upload examples/toy-regression.npz --name toy-regression
        stack.cli("datasets", "upload", str(EXAMPLES / "toy-regression.npz"), "--name", "toy-regression", *key)
    result = stack.cli("submit", str(EXAMPLES / name), "--wait", "--json", *key, timeout=300)
    job = json.loads(result.stdout)
    assert job["status"] == "succeeded", job["error"]
    metrics = job["final_metrics"]
    if "test_accuracy" in metrics:
        assert metrics["test_accuracy"] > 0.8  # the MLP learns MNIST, not just runs
    else:
        assert metrics["train_loss"] < 1e-3  # the regimes visibly work: the narrow net fits
