"""Issue 4 through the service: a deep (MLP) job on real MNIST 5k, per-epoch metrics, and ResNet routing."""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors.numpy import load_file

from narrownet.client import NarrownetClient
from tests.e2e.conftest import Stack

pytestmark = pytest.mark.service

MLP_SPEC = {
    "name": "e2e-mnist-mlp", "regime": "constrained",
    "model": {"arch": "mlp", "hidden": [64, 16], "activation": "relu"},
    "data": {"source": "mnist5k", "test_fraction": 0.2, "seed": 0, "limit": 1000},
    "loss": "cross_entropy",
    "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 64, "epochs": 3,
              "schedule": "cosine"},
    "constraint": {"radius": 5.0}, "seed": 0, "device": "cpu",
}


@pytest.fixture(scope="module")
def carol(stack: Stack):
    with stack.client(stack.create_key("carol")) as client:
        yield client


def test_constrained_mlp_on_mnist5k_runs_through_the_service_with_per_epoch_metrics(
        carol: NarrownetClient, tmp_path: Path):
    job = carol.submit(MLP_SPEC)
    assert job["queue"] == "cpu"
    done = carol.wait(job["id"], timeout=240, poll_interval=0.5)
    assert done["status"] == "succeeded", done
    steps_per_epoch = -(-800 // 64)  # 1000 samples, 20% held out, batches of 64
    assert done["total_steps"] == 3 * steps_per_epoch
    final = done["final_metrics"]
    assert final["test_accuracy"] > 0.6  # real MNIST digits, 3 short epochs: far above chance (0.1)
    assert final["w_dist"] <= 5.0 * (1 + 1e-5)  # the projected (paired) layer stayed inside its ball

    epochs = [p["values"]["epoch"] for p in carol.metrics(job["id"])["points"] if "epoch" in p["values"]]
    assert {1, 2, 3} <= set(epochs)

    digest = carol.fetch_checkpoint(job["id"], tmp_path / "mlp.safetensors")
    assert len(digest) == 64 and load_file(str(tmp_path / "mlp.safetensors"))


def test_resnet_jobs_go_to_the_gpu_queue_unless_the_spec_says_cpu(carol: NarrownetClient):
    spec = {"name": "e2e-resnet", "regime": "constrained", "model": {"arch": "resnet18", "block4_width": 64},
            "data": {"source": "digits"}, "loss": "cross_entropy",
            "optim": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "batch_size": 32, "epochs": 1},
            "constraint": {"radius": 5.0}, "device": "auto"}
    gpu_job = carol.submit(spec)
    assert gpu_job["queue"] == "gpu"
    cpu_job = carol.submit({**spec, "name": "e2e-resnet-cpu", "device": "cpu"})
    assert cpu_job["queue"] == "cpu"
    # The test worker consumes both queues; routing is what is under test here, so stop both jobs.
    for job in (gpu_job, cpu_job):
        carol.cancel(job["id"])
        assert carol.wait(job["id"], timeout=60, poll_interval=0.2)["status"] == "cancelled"
