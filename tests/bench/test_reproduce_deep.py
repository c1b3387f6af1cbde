"""The GPU-ready deep reproductions on CPU: --smoke on CIFAR-format files the test writes, in-process and through a
running service (--url), and --estimate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.gpu_estimate import ASSUMPTIONS
from narrownet.cluster import Cluster
from tests.cifar_files import make_cifar10

ROOT = Path(__file__).resolve().parents[2]
PER_BATCH = 24  # 5 x 24 training and 24 test images; --smoke uses 120 of the 144


def script(name: str, *args: str, env: dict[str, str] | None = None, check: bool = True,
           timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "bench" / name), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=env, check=check)


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    make_cifar10(root, per_batch=PER_BATCH)
    return root


def runs_of(out: Path, name: str) -> list[dict]:
    return json.loads((out / f"{name}.json").read_text())["runs"]


def test_random_labels_smoke_trains_every_width_activation_and_regime(cifar_dir: Path, tmp_path: Path):
    script("reproduce_random_labels.py", "--smoke", "--data-dir", str(cifar_dir), "--out", str(tmp_path))
    report = json.loads((tmp_path / "random_labels.smoke.json").read_text())
    s = report["setting"]
    runs = report["runs"]
    tags = sorted((r["tags"]["width"], r["tags"]["activation"], r["tags"]["regime"]) for r in runs)
    assert tags == sorted((w, a, g) for w in s["widths"] for a in s["activations"] for g in s["regimes"])
    for r in runs:
        assert r["status"] == "succeeded"
        spec = r["spec"]
        assert spec["data"]["random_labels"] and spec["data"]["source"] == "cifar10"
        assert spec["model"] == {"arch": "shallow", "width": r["tags"]["width"], "activation": r["tags"]["activation"]}
        assert [h["epoch"] for h in r["history"] if "epoch" in h] == [0.0, 1.0, 2.0]
        assert 0.0 <= r["final"]["train_accuracy"] <= 1.0
    md = (tmp_path / "random_labels.smoke.md").read_text()
    assert f"| {s['widths'][0]} | relu | - |" in md
    assert (tmp_path / "random_labels.smoke.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow  # six ResNet-18 runs on the CPU: ~20 s of CPU, minutes on a loaded machine
def test_cifar_smoke_trains_both_regimes_with_the_ball_around_block_4(cifar_dir: Path, tmp_path: Path):
    script("reproduce_cifar.py", "--smoke", "--data-dir", str(cifar_dir), "--out", str(tmp_path))
    report = json.loads((tmp_path / "cifar.smoke.json").read_text())
    s = report["setting"]
    runs = report["runs"]
    assert len(runs) == len(s["widths"]) * len(s["cells"])
    for r in runs:
        assert r["status"] == "succeeded"
        spec = r["spec"]
        assert spec["model"]["arch"] == "resnet18" and spec["data"]["augment"]
        assert spec["optim"]["schedule"] == "cosine" and spec["optim"]["weight_decay"] == 5e-4
        radius = r["tags"]["radius"]
        if radius is not None:
            assert radius == pytest.approx(0.5 * r["tags"]["block4_init_norm"])
            assert r["final"]["w_dist"] <= radius * (1 + 1e-5)
    widths = {r["tags"]["width"]: r["tags"]["block4_params"] for r in runs}
    assert widths[16] > widths[8]
    md = (tmp_path / "cifar.smoke.md").read_text()
    assert "## Test accuracy" in md and "constrained, r=0.5‖θ0‖" in md
    assert (tmp_path / "cifar.smoke.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    script("reproduce_cifar.py", "--smoke", "--estimate", "--out", str(tmp_path))
    estimate = json.loads((tmp_path / "cifar.estimate.json").read_text())
    assert estimate["assumption"] == ASSUMPTIONS["resnet18"].__dict__
    flops = {(r["width"], r["cell"]): r["step_flops"] for r in estimate["rows"]}
    assert len(flops) == len(s["widths"]) * len(s["cells"])
    # Block 4 is the only part that changes with its width, and both regimes have the same convolutions there.
    assert flops[(16, "regular, r=inf")] > flops[(8, "regular, r=inf")]
    assert flops[(8, "constrained, r=inf")] == pytest.approx(flops[(8, "regular, r=inf")], rel=0.01)
    assert all(r["assumed_gpu_seconds"] > 0 for r in estimate["rows"])


def test_estimates_count_the_flops_of_the_runs_and_state_the_assumption(tmp_path: Path):
    script("reproduce_random_labels.py", "--smoke", "--estimate", "--out", str(tmp_path))
    report = json.loads((tmp_path / "random_labels.estimate.json").read_text())
    assert report["assumption"] == ASSUMPTIONS["shallow"].__dict__
    s = report["setting"]
    b, d = s["batch_size"], 3 * 32 * 32
    for row in report["rows"]:
        m = row["width"]
        # One step: the forward X W^T and the backward X^T G, 2 b d m FLOP each; the outer layer is negligible.
        assert row["step_flops"] == pytest.approx(4 * b * d * m, rel=0.05)
        assert row["eval_flops_per_sample"] == pytest.approx(2 * d * m, rel=0.05)
        steps = -(-100 // b)  # 120 images of which 100 train
        rate = ASSUMPTIONS["shallow"].sustained_tflops * 1e12
        expected = s["epochs"] * (steps * (row["step_flops"] / rate + ASSUMPTIONS["shallow"].step_overhead_ms / 1e3)
                                  + 120 * row["eval_flops_per_sample"] / rate)
        assert row["assumed_gpu_seconds"] == pytest.approx(expected)


@pytest.mark.slow  # starts an API and a worker process
def test_url_mode_submits_jobs_whose_results_equal_the_in_process_runs(cifar_dir: Path, tmp_path: Path):
    local = tmp_path / "local"
    script("reproduce_random_labels.py", "--smoke", "--data-dir", str(cifar_dir), "--out", str(local))
    home = tmp_path / "home"
    home.mkdir()
    cluster = Cluster(home, f"sqlite:///{home / 'narrownet.db'}", f"sqla+sqlite:///{home / 'broker.db'}",
                      {"NARROWNET_DATA_DIR": str(cifar_dir), "NARROWNET_WORKER_TORCH_THREADS": "1"})
    env = cluster.env
    subprocess.run([sys.executable, "-m", "narrownet", "db", "upgrade"], env=env, check=True, timeout=120,
                   capture_output=True)
    created = subprocess.run([sys.executable, "-m", "narrownet", "keys", "create", "repro"], env=env, check=True,
                             timeout=120, capture_output=True, text=True)
    key = created.stdout.strip().splitlines()[-1]
    try:
        cluster.start_api()
        cluster.start_worker()
        cluster.wait_api()
        cluster.wait_worker()
        service = tmp_path / "service"
        args = ["--smoke", "--url", cluster.url, "--key", key, "--out", str(service)]
        first = script("reproduce_random_labels.py", *args, timeout=900)
        assert "submitted" in first.stdout
        again = script("reproduce_random_labels.py", *args, timeout=900)  # attaches to the same jobs
    finally:
        cluster.stop()
    by_name = {r["name"]: r for r in runs_of(local, "random_labels.smoke")}
    remote = runs_of(service, "random_labels.smoke")
    assert len(remote) == len(by_name)
    for r in remote:
        assert r["status"] == "succeeded" and r["job_id"]
        mine = by_name[r["name"]]
        assert r["spec"] == mine["spec"]
        # The same trainer, spec and seed on the same CPU: the service's run is the in-process run.
        assert r["final"]["train_accuracy"] == mine["final"]["train_accuracy"]
        assert r["final"]["train_loss"] == pytest.approx(mine["final"]["train_loss"], rel=1e-6)
        assert [h["step"] for h in r["history"]] == [h["step"] for h in mine["history"]]
    ids = [line.split("job ")[1].split(" ")[0] for line in first.stdout.splitlines() if "submitted" in line]
    assert ids == [line.split("job ")[1].split(" ")[0] for line in again.stdout.splitlines() if "submitted" in line]
