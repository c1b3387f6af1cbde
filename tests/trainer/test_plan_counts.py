"""The planner's counts (trainer/plan) against hand counts, and against the real modules, files and runs they
predict: parameters and FLOPs of a shallow net, an MLP and ResNet-18 at two widths, checkpoint bytes, step and
metric-record counts, data shapes, and where the width sits relative to 2n/d and n."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from trainer.data import load_data
from trainer.deep.models import build_model
from trainer.loop import train
from trainer.plan import DataShape, data_shape, describe, plan_job
from trainer.plan.costs import checkpoint_estimate, compute_cost, parameter_counts
from trainer.plan.width import BELOW, NARROW, WIDE, verdict
from trainer.spec import DatasetRef, JobSpec, NpzData

CIFAR10 = DataShape(50_000, 10_000, (3, 32, 32), 10, "classification")


def job(model: dict, data: dict, **overrides) -> JobSpec:
    spec = {"regime": "constrained", "model": model, "data": data,
            "optim": {"name": "gd", "lr": 0.1, "momentum": 0.9, "iterations": 100}, "device": "cpu"}
    spec.update(overrides)
    return JobSpec.model_validate(spec)


def resnet(width: int, regime: str = "constrained") -> JobSpec:
    return job({"arch": "resnet18", "block4_width": width}, {"source": "cifar10"}, regime=regime,
               loss="cross_entropy", optim={"name": "sgd", "lr": 0.1, "momentum": 0.9, "batch_size": 128,
                                            "epochs": 1})


# --------------------------------------------------------------------------------------- hand counts
@pytest.mark.parametrize("regime, outer", [("constrained", 20), ("regular", 40)])
def test_shallow_net_counts_match_a_hand_count(regime: str, outer: int) -> None:
    spec = job({"arch": "shallow", "width": 40}, {"source": "synthetic", "n": 200, "d": 20, "n_test": 50},
               regime=regime, constraint={"radius": 5.0}, metrics_every=10)
    plan = plan_job(spec, data_shape(spec.data), device="cpu")
    # W is 40 x 20; v has m/2 = 20 rows in the pairwise net (9), m = 40 in the regular one (1); one output.
    assert plan.parameters.model_dump() == {"total": 800 + outer, "hidden_layer": 800, "outer": outer,
                                            "constrained": 800, "buffers": 0}
    # A step: forward 200 x (800 + outer) multiply-adds, backward twice that, 2 FLOPs each.
    assert plan.compute.flops_per_step == 6 * 200 * (800 + outer)
    # 11 records (step 0, then every 10 of 100), each a forward over 200 + 50 samples.
    assert plan.compute.evaluations == 11
    assert plan.compute.flops_per_evaluation == 2 * 250 * (800 + outer)
    assert plan.width.model_dump(exclude={"counted_as", "layer"}) == {
        "n": 200, "d": 20, "m": 40, "two_n_over_d": 20.0, "verdict": NARROW}
    # W, v, W0, two momentum buffers: (2 x 800 + 2 x outer + 800) float32, plus x_mean, x_std of 20 each.
    assert plan.memory.parameters == 4 * (800 + outer)
    assert plan.memory.optimizer_state == 4 * (800 + outer)
    assert plan.memory.initial_copies == 4 * 800


@pytest.mark.parametrize("regime, out_rows", [("constrained", 16), ("regular", 32)])
def test_mlp_counts_match_a_hand_count(regime: str, out_rows: int) -> None:
    spec = job({"arch": "mlp", "hidden": [128, 32]}, {"source": "mnist5k", "test_fraction": 0.2}, regime=regime,
               loss="cross_entropy", optim={"name": "adam", "lr": 1e-3, "batch_size": 64, "epochs": 2})
    shape = data_shape(spec.data)
    assert (shape.n_train, shape.n_test, shape.input_dim, shape.outputs) == (4000, 1000, 784, 10)
    plan = plan_job(spec, shape, device="cpu")
    body, last, out = 784 * 128 + 128, 128 * 32 + 32, out_rows * 10 + 10
    assert plan.parameters.model_dump() == {"total": body + last + out, "hidden_layer": last, "outer": out,
                                            "constrained": 0, "buffers": 0}
    # 63 batches per epoch (62 of 64 samples, one of 32): a step sees 4000 / 63 samples on average.
    assert plan.compute.steps == 2 * 63
    assert plan.compute.flops_per_step == pytest.approx(6 * 4000 / 63 * (784 * 128 + 128 * 32 + out_rows * 10),
                                                        rel=1e-12)
    # The paper's MNIST counting (appendix G): the last hidden layer's input is the first hidden layer.
    assert (plan.width.n, plan.width.d, plan.width.m, plan.width.verdict) == (4000, 128, 32, BELOW)  # 2n/d = 62.5
    assert plan.memory.optimizer_state == 2 * 4 * (body + last + out)  # Adam: two moments per parameter


def resnet18_hand_count(width: int, classes: int, pairwise: bool) -> int:
    """Blocks 1-3 and the CIFAR stem are fixed; block 4 is 27 w^2 + 2570 w (two 3x3 convs and a 1x1 shortcut
    from 256 channels, three 3x3 convs w -> w, 5 BatchNorms of 2w parameters); the output layer is (w or w/2) x k."""
    stem = 3 * 64 * 9 + 2 * 64
    block1 = 4 * 64 * 64 * 9 + 4 * 2 * 64
    block2 = 64 * 128 * 9 + 3 * 128 * 128 * 9 + 64 * 128 + 5 * 2 * 128
    block3 = 128 * 256 * 9 + 3 * 256 * 256 * 9 + 128 * 256 + 5 * 2 * 256
    block4 = 256 * width * 9 + 3 * width * width * 9 + 256 * width + 5 * 2 * width
    assert block4 == 27 * width**2 + 2570 * width
    outer = (width // 2 if pairwise else width) * classes + classes
    return stem + block1 + block2 + block3 + block4 + outer


@pytest.mark.parametrize("width", [512, 64])
@pytest.mark.parametrize("regime", ["constrained", "regular"])
def test_resnet18_counts_match_a_hand_count_and_torch(width: int, regime: str) -> None:
    spec = resnet(width, regime)
    plan = plan_job(spec, CIFAR10, device="cuda")
    total = resnet18_hand_count(width, 10, regime == "constrained")
    assert plan.parameters.total == total
    assert plan.parameters.hidden_layer == 27 * width**2 + 2570 * width
    if (width, regime) == (512, "regular"):
        assert total == 11_173_962  # the standard CIFAR ResNet-18
    model = build_model(spec, CIFAR10.sample_shape, 10)
    assert plan.parameters.total == sum(p.numel() for p in model.parameters())
    net = describe(spec, CIFAR10)
    assert {t.name: t.shape for t in (*net.params, *net.buffers)} == {
        k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {t.name for t in net.block_params} == {f"layer4.{n}" for n, _ in model.layer4.named_parameters()}


@pytest.mark.parametrize("width", [512, 64])
def test_resnet18_width_counts_channels_times_spatial_positions(width: int) -> None:
    plan = plan_job(resnet(width), CIFAR10, device="cuda")
    # 32x32 inputs, CIFAR stem: block 3 leaves 256 x 8 x 8, block 4 gives w x 4 x 4.
    assert (plan.width.n, plan.width.d, plan.width.m) == (50_000, 256 * 64, width * 16)
    assert plan.width.verdict == NARROW  # 2n/d = 6.1 <= 16 w < 50,000 for every width the paper tried
    assert "spatial positions" in plan.width.counted_as


def macs_of(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-adds of the convolutions and linear layers of one forward pass, counted with hooks."""
    total = 0

    def count(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
            total += output.numel() * per_output
        elif isinstance(module, nn.Linear):
            total += output.numel() * module.in_features

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    return total


@pytest.mark.parametrize("width, sample", [(512, (3, 32, 32)), (64, (3, 32, 32)), (8, (1, 64, 64))])
def test_resnet18_flops_match_the_modules_forward_pass(width: int, sample: tuple[int, ...]) -> None:
    shape = DataShape(16, 0, sample, 10, "classification")
    spec = job({"arch": "resnet18", "block4_width": width}, {"source": "digits"}, loss="cross_entropy",
               optim={"name": "sgd", "lr": 0.1, "batch_size": 4, "iterations": 1})
    model = build_model(spec, sample, 10)
    assert describe(spec, shape).macs == macs_of(model, torch.zeros(1, *sample))
    assert compute_cost(spec, shape, describe(spec, shape)).flops_per_step == 6 * 4 * macs_of(model,
                                                                                              torch.zeros(1, *sample))


# ------------------------------------------------------------------------- predictions of real runs
def _train_and_check(spec: JobSpec, tmp_path) -> None:
    result = train(spec, tmp_path / "run")
    shape = data_shape(spec.data)
    plan = plan_job(spec, shape, device="cpu")
    assert plan.compute.steps == result.total_steps
    assert plan.compute.evaluations == len(result.history)
    assert plan.checkpoint.bytes == result.checkpoint.stat().st_size  # to the byte
    assert result.data_shape == shape


def test_checkpoint_size_steps_and_records_of_a_shallow_run(make_spec, tmp_path) -> None:
    spec = make_spec(optim={"iterations": 47}, metrics_every=10, checkpoint_every=20)
    _train_and_check(spec, tmp_path)
    assert plan_job(spec, data_shape(spec.data), device="cpu").checkpoint.written == 3  # steps 20, 40, 47


def test_checkpoint_size_steps_and_records_of_an_mlp_run_by_epochs(tmp_path) -> None:
    spec = job({"arch": "mlp", "hidden": [16, 8]}, {"source": "digits", "limit": 300, "test_fraction": 0.25},
               loss="cross_entropy", metrics_every=7,
               optim={"name": "adam", "lr": 1e-3, "batch_size": 32, "epochs": 3})
    _train_and_check(spec, tmp_path)


def test_checkpoint_size_steps_and_records_of_a_resnet_run(tmp_path) -> None:
    # 41 training samples in batches of 8: the last batch of one is dropped (BatchNorm), 5 steps per epoch.
    spec = job({"arch": "resnet18", "block4_width": 4}, {"source": "digits", "limit": 51, "test_fraction": 0.2},
               loss="cross_entropy", constraint={"radius": 0.5}, metrics_every=3,
               optim={"name": "sgd", "lr": 0.05, "momentum": 0.9, "batch_size": 8, "epochs": 2})
    assert data_shape(spec.data).n_train == 41
    _train_and_check(spec, tmp_path)


@pytest.mark.parametrize("limit", [None, 50, 7])
def test_data_shape_of_an_upload_with_its_own_test_set_matches_the_loaded_data(tmp_path, limit) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, X=rng.normal(size=(90, 5)), y=rng.normal(size=(90, 3)),
             X_test=rng.normal(size=(30, 5)), y_test=rng.normal(size=(30, 3)))
    loaded = load_data(NpzData(source="npz", path=str(path), limit=limit))
    uploaded = DataShape(90, 30, (5,), 3, "regression")  # as the service records the file at upload
    assert data_shape(DatasetRef(source="dataset", id="x", limit=limit), uploaded) == DataShape(
        loaded.n_train, loaded.n_test, loaded.input_shape, loaded.output_dim, "regression")


@pytest.mark.parametrize("data", [
    {"source": "digits", "test_fraction": 0.3, "limit": 101}, {"source": "digits"},
    {"source": "mnist5k", "test_fraction": 0.1}, {"source": "synthetic", "n": 33, "d": 7, "n_test": 5},
])
def test_data_shape_of_built_in_sources_matches_the_loaded_data(data) -> None:
    spec = job({"arch": "shallow", "width": 4}, data)
    loaded = load_data(spec.data)
    assert data_shape(spec.data) == DataShape(loaded.n_train, loaded.n_test, loaded.input_shape,
                                              loaded.output_dim, loaded.task)


# ------------------------------------------------------------------------------------ width verdict
@pytest.mark.parametrize("n, d, m, expected", [
    (1000, 20, 99, BELOW), (1000, 20, 100, NARROW), (1000, 20, 999, NARROW), (1000, 20, 1000, WIDE),
    (100, 1, 150, WIDE),  # 2n/d > n: m >= n is wide all the same
])
def test_width_verdict_boundaries(n: int, d: int, m: int, expected: str) -> None:
    assert verdict(n, d, m) == expected


def test_parameter_counts_say_what_the_constraints_act_on() -> None:
    data = {"source": "synthetic", "n": 10, "d": 3}
    unconstrained = job({"arch": "shallow", "width": 4}, data)
    both = job({"arch": "shallow", "width": 4}, data, constraint={"radius": 1.0, "zeta": 0.01})
    shape = data_shape(unconstrained.data)
    assert parameter_counts(unconstrained, describe(unconstrained, shape)).constrained == 0
    assert parameter_counts(both, describe(both, shape)).constrained == 12 + 2
    assert checkpoint_estimate(both, shape, describe(both, shape)).written == 1
