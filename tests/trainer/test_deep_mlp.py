"""The MLP through train(): the constrained invariants on its last hidden layer, resume, per-epoch metrics,
predict, and real MNIST accuracy."""

import json

import pytest
import torch

from tests.trainer.stop_after import StopAfter
from tests.trainer.v_set import assert_counts_binding_steps
from trainer.checkpoint import latest_checkpoint
from trainer.data import DataError, load_data
from trainer.deep import build_model
from trainer.loop import train
from trainer.predict import predict
from trainer.spec import JobSpec

ISSUE_EXAMPLE = {
    "regime": "constrained", "model": {"arch": "mlp", "hidden": [256, 32], "activation": "relu"},
    "data": {"source": "mnist5k", "test_fraction": 0.2, "seed": 0}, "loss": "cross_entropy",
    "optim": {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 64, "epochs": 3,
              "schedule": "cosine"},
    "constraint": {"radius": 5.0}, "seed": 0, "device": "cpu",
}


def mlp_spec(**overrides) -> JobSpec:
    """A tiny MLP job on scikit-learn digits (8x8); nested dicts merge into the defaults."""
    spec = {
        "regime": "constrained", "model": {"arch": "mlp", "hidden": [24, 8], "activation": "relu"},
        "data": {"source": "digits", "limit": 200, "test_fraction": 0.25, "seed": 0}, "loss": "cross_entropy",
        "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 32, "epochs": 4,
                  "schedule": "cosine"},
        "constraint": {"radius": 0.5}, "metrics_every": 1000, "seed": 1, "device": "cpu",
    }
    for key, value in overrides.items():
        spec[key] = {**spec[key], **value} if isinstance(value, dict) and isinstance(spec.get(key), dict) else value
    return JobSpec.model_validate(spec)


def test_issue_4_spec_examples_validate():
    spec = JobSpec.model_validate(ISSUE_EXAMPLE)
    assert spec.model.arch == "mlp" and spec.model.hidden == [256, 32] and spec.radius == 5.0
    resnet = JobSpec.model_validate({**ISSUE_EXAMPLE, "model": {"arch": "resnet18", "block4_width": 64},
                                     "data": {"source": "cifar10", "augment": True}})
    assert resnet.model.block4_width == 64
    assert JobSpec.model_validate_json(resnet.model_dump_json()) == resnet


def test_mirrored_mlp_starts_at_zero_output(tmp_path):
    result = train(mlp_spec(optim={"epochs": 1}), tmp_path)
    first = result.history[0]
    # f = 0 for every input: softmax is uniform, so the loss is log(10) and w_dist is 0.
    assert first["train_loss"] == pytest.approx(torch.log(torch.tensor(10.0)).item(), rel=1e-6)
    assert first["test_loss"] == pytest.approx(torch.log(torch.tensor(10.0)).item(), rel=1e-6)
    assert first["w_dist"] == 0.0


@pytest.mark.parametrize("regime", ["constrained", "regular"])
def test_projected_layer_stays_within_r_while_the_other_layers_move_freely(tmp_path, regime):
    r = 0.05
    spec = mlp_spec(regime=regime, optim={"lr": 0.2}, constraint={"radius": r}, metrics_every=1)
    result = train(spec, tmp_path)
    dists = [h["w_dist"] for h in result.history]
    assert max(dists) <= r * (1 + 1e-5)
    assert max(dists) == pytest.approx(r, rel=1e-4)  # the constraint binds
    data = load_data(spec.data)
    init = build_model(spec, data.input_shape, 10).state_dict()
    final = latest_checkpoint(tmp_path).tensors
    for name in ("body.0.weight", "out.weight"):
        moved = torch.linalg.vector_norm(final[f"model.{name}"] - init[name]).item()
        assert moved > 2 * r, name
    last = torch.cat([(final[f"model.last.{k}"] - init[f"last.{k}"]).flatten() for k in ("weight", "bias")])
    assert torch.linalg.vector_norm(last).item() == pytest.approx(dists[-1], rel=1e-4)


def test_all_rows_of_the_paired_layer_train_but_only_half_the_outer_weights_exist(tmp_path):
    train(mlp_spec(constraint={"radius": None}), tmp_path)
    t = latest_checkpoint(tmp_path).tensors
    W = t["model.last.weight"]
    assert W.shape == (8, 24) and not torch.equal(W[:4], W[4:])
    assert t["model.out.weight"].shape == (10, 4)


@pytest.mark.parametrize("optim", [
    {"name": "sgd", "momentum": 0.9, "nesterov": True, "schedule": "step"},
    {"name": "adam", "lr": 0.01, "momentum": 0.0, "weight_decay": 1e-4},
])
def test_resume_from_checkpoint_equals_uninterrupted_run(tmp_path, optim):
    spec = mlp_spec(optim=optim, checkpoint_every=5, metrics_every=7, constraint={"radius": 0.3, "zeta": 1e-4})
    full = train(spec, tmp_path / "full")
    stopped = train(spec, tmp_path / "resumed", callbacks=StopAfter(7))
    assert stopped.status == "stopped" and stopped.step == 7
    resumed = train(spec, tmp_path / "resumed")
    ref, got = latest_checkpoint(tmp_path / "full").tensors, latest_checkpoint(tmp_path / "resumed").tensors
    assert set(ref) == set(got) and any(k.startswith("opt.") for k in ref)
    for name in ref:
        assert torch.equal(ref[name], got[name]), name
    assert resumed.final_metrics == full.final_metrics


def test_metrics_are_recorded_at_every_epoch_end_with_the_epoch(tmp_path):
    spec = mlp_spec(metrics_every=3)  # 150 training samples / 32 = 5 steps per epoch
    result = train(spec, tmp_path)
    steps = [h["step"] for h in result.history]
    assert steps == [0, 3, 5, 6, 9, 10, 12, 15, 18, 20]
    by_step = {h["step"]: h for h in result.history}
    assert [by_step[s]["epoch"] for s in (5, 10, 15, 20)] == [1.0, 2.0, 3.0, 4.0]
    assert {"train_loss", "train_accuracy", "test_loss", "test_accuracy", "w_dist"} <= set(by_step[5])
    lines = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [ln["step"] for ln in lines] == steps
    assert "final_test_accuracy" in latest_checkpoint(tmp_path).meta


def test_predict_from_a_checkpoint_reproduces_the_test_accuracy(tmp_path):
    spec = mlp_spec(regime="regular", model={"activation": "tanh"})
    result = train(spec, tmp_path)
    data = load_data(spec.data)
    raw = data.X_test * data.x_std + data.x_mean  # predict takes inputs in their original units
    logits = predict(latest_checkpoint(tmp_path), raw)
    accuracy = (logits.argmax(1) == data.y_test).float().mean().item()
    assert accuracy == pytest.approx(result.final_metrics["test_accuracy"], abs=1e-6)
    with pytest.raises(ValueError, match="X: the model was trained on images"):
        predict(latest_checkpoint(tmp_path), raw.flatten(1))


def test_v_set_holds_on_the_output_layer_and_binding_steps_are_counted(tmp_path):
    # V bounds every entry of the pairwise output layer V (k x m/2); zeta above the smallest |v0| binds at once.
    zeta, gamma = 0.02, 30.0
    spec = mlp_spec(constraint={"radius": None, "zeta": zeta, "gamma": gamma}, metrics_every=1)
    result = train(spec, tmp_path)
    for h in result.history[1:]:
        assert h["v_min"] >= zeta * (1 - 1e-6)
        assert h["v_ratio"] <= gamma * (1 + 1e-5)
    assert_counts_binding_steps(result.history, zeta, gamma)
    v = latest_checkpoint(tmp_path).tensors["model.out.weight"].abs()
    assert v.min().item() >= zeta * (1 - 1e-6) and v.max().item() <= gamma * v.min().item() * (1 + 1e-5)


def test_square_loss_on_one_hot_targets(tmp_path):
    result = train(mlp_spec(loss="square", optim={"epochs": 10, "lr": 0.1}), tmp_path)
    assert result.history[0]["train_loss"] == pytest.approx(0.5, rel=1e-6)  # f = 0 against one-hot targets
    assert result.final_metrics["train_loss"] < 0.8 * 0.5
    assert result.final_metrics["train_accuracy"] > 0.3  # 3x chance


def test_mlp_too_large_for_its_input_is_refused_naming_the_field(tmp_path):
    spec = mlp_spec(model={"hidden": [16384, 16384, 16384, 16]})
    with pytest.raises(DataError, match="model.hidden"):
        train(spec, tmp_path)


@pytest.mark.parametrize("regime", ["constrained", "regular"])
def test_mnist5k_subset_reaches_sensible_test_accuracy(tmp_path, regime):
    spec = JobSpec.model_validate({
        **ISSUE_EXAMPLE, "regime": regime, "model": {"arch": "mlp", "hidden": [128, 16], "activation": "relu"},
        "data": {"source": "mnist5k", "limit": 1000, "test_fraction": 0.25, "seed": 0},
        "optim": {**ISSUE_EXAMPLE["optim"], "lr": 0.05, "batch_size": 32, "epochs": 5}, "metrics_every": 1000,
    })
    result = train(spec, tmp_path)
    assert result.final_metrics["test_accuracy"] > 0.8
    assert result.final_metrics["train_accuracy"] > 0.9
