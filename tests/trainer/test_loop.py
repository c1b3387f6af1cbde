import json
import math

import pytest
import torch
from safetensors.torch import load_file

from bench.reference import reference_train
from tests.trainer.stop_after import StopAfter
from tests.trainer.v_set import assert_counts_binding_steps
from trainer.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, save_checkpoint
from trainer.data import load_data
from trainer.loop import TrainingDiverged, train


def _final_weights(run_dir):
    return latest_checkpoint(run_dir).tensors


def test_same_seed_and_spec_give_bitwise_equal_runs(tmp_path, make_spec):
    spec = make_spec(optim={"batch_size": 8, "iterations": None, "epochs": 6, "schedule": "cosine"})
    a = train(spec, tmp_path / "a")
    b = train(spec, tmp_path / "b")
    for name, t in _final_weights(tmp_path / "a").items():
        assert torch.equal(t, _final_weights(tmp_path / "b")[name]), name
    assert a.final_metrics == b.final_metrics


def test_checkpoints_not_fsynced_are_the_same_whole_files(tmp_path, make_spec):
    # durable=False (the worker, whose durable copy is the artifact store's) skips the fsyncs, not the atomic rename.
    spec = make_spec(checkpoint_every=7)
    train(spec, tmp_path / "durable")
    train(spec, tmp_path / "cache", durable=False)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(
        p.name for p in (tmp_path / "durable").iterdir())  # no temp file left behind
    cache, durable = latest_checkpoint(tmp_path / "cache"), latest_checkpoint(tmp_path / "durable")
    assert cache.meta["sha256"] == durable.meta["sha256"]


def test_the_same_weights_make_the_same_checkpoint_file(tmp_path):
    # Whatever the order safetensors writes its header in: a checkpoint's sha256 names its contents.
    tensors = {"W": torch.arange(6.0).reshape(2, 3), "v": torch.ones(3)}
    digests = {save_checkpoint(tmp_path / str(i), 7, tensors, {})[1]["sha256"] for i in range(12)}
    assert len(digests) == 1


@pytest.mark.parametrize("optim", [
    {"name": "sgd", "momentum": 0.9, "batch_size": 8, "iterations": None, "epochs": 8, "schedule": "cosine"},
    {"name": "adam", "lr_hidden": 0.01, "lr_outer": 0.01, "momentum": 0.0, "schedule": "step", "weight_decay": 1e-3},
])
def test_resume_from_checkpoint_equals_uninterrupted_run(tmp_path, make_spec, optim):
    spec = make_spec(optim=optim, checkpoint_every=7, constraint={"zeta": 0.02, "gamma": 8.0})
    full = train(spec, tmp_path / "full")
    stopped = train(spec, tmp_path / "resumed", callbacks=StopAfter(20))
    assert stopped.status == "stopped" and stopped.step == 20
    resumed = train(spec, tmp_path / "resumed")
    assert resumed.status == "completed"
    ref, got = _final_weights(tmp_path / "full"), _final_weights(tmp_path / "resumed")
    assert set(ref) == set(got)
    for name in ("W", "v", "W0", "v_projected_steps", *[k for k in ref if k.startswith("opt.")]):
        assert torch.equal(ref[name], got[name]), name
    assert resumed.final_metrics == full.final_metrics
    steps = [json.loads(line)["step"] for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)), "each step recorded exactly once across the resume"


@pytest.mark.parametrize("regime,activation", [("constrained", "tanh"), ("regular", "softplus"),
                                               ("constrained", "sigmoid"), ("regular", "relu")])
@pytest.mark.parametrize("optim", [{"name": "sgd", "momentum": 0.9, "nesterov": True},
                                   {"name": "adam", "lr_hidden": 0.01, "lr_outer": 0.02, "weight_decay": 1e-3}])
def test_trainer_matches_plain_pytorch_reference_loop(tmp_path, make_spec, regime, activation, optim):
    spec = make_spec(regime=regime, model={"activation": activation}, optim=optim, constraint={"radius": 0.3})
    train(spec, tmp_path)
    ours = _final_weights(tmp_path)
    ref = reference_train(spec, load_data(spec.data), steps=spec.optim.iterations)
    torch.testing.assert_close(ours["W"], ref.W.detach(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours["v"], ref.v.detach(), rtol=1e-4, atol=1e-5)


def test_mirrored_init_starts_at_zero_output(tmp_path, make_spec):
    spec = make_spec(optim={"iterations": 1})
    result = train(spec, tmp_path)
    y = load_data(spec.data).y_train
    first = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert first["step"] == 0
    assert first["train_loss"] == pytest.approx(0.5 * y.square().mean().item(), rel=1e-6)
    assert result.history[0]["w_dist"] == 0.0


def test_projection_keeps_w_within_radius_at_every_step(tmp_path, make_spec):
    spec = make_spec(optim={"lr_hidden": 2.0, "iterations": 100}, constraint={"radius": 0.25}, metrics_every=1)
    result = train(spec, tmp_path)
    dists = [h["w_dist"] for h in result.history]
    assert max(dists) <= 0.25 * (1 + 1e-5)
    assert max(dists) == pytest.approx(0.25, rel=1e-4)  # the constraint is active, not vacuous


def test_pairwise_structure_outputs_equal_the_paper_formula(tmp_path, make_spec):
    spec = make_spec(optim={"iterations": 40})
    train(spec, tmp_path)
    t = _final_weights(tmp_path)
    W, v = t["W"].double(), t["v"].double()
    m = spec.model.width
    assert v.shape == (m // 2, 1)
    assert not torch.equal(W[: m // 2], W[m // 2:])  # all m rows of W are free after training
    X = load_data(spec.data).X_train.double()
    f = sum(v[j] * (torch.tanh(X @ W[j]) - torch.tanh(X @ W[j + m // 2])) for j in range(m // 2))
    loss = 0.5 * (f[:, None] - load_data(spec.data).y_train.double()).square().mean()
    meta = json.loads(latest_checkpoint(tmp_path).path.with_suffix(".json").read_text())
    assert meta["final_train_loss"] == pytest.approx(loss.item(), rel=1e-4)


def test_training_fits_a_small_problem(tmp_path, make_spec):
    spec = make_spec(model={"width": 40}, optim={"lr_hidden": 0.5, "lr_outer": 0.5, "iterations": 3000},
                     constraint={"radius": None}, metrics_every=500)
    result = train(spec, tmp_path)
    assert result.final_metrics["train_loss"] < 1e-3 * result.history[0]["train_loss"]


def test_zeta_gamma_keep_v_in_v_set(tmp_path, make_spec):
    spec = make_spec(constraint={"radius": 2.0, "zeta": 0.05, "gamma": 4.0}, metrics_every=1)
    result = train(spec, tmp_path)
    for h in result.history[1:]:
        assert h["v_min"] >= 0.05 * (1 - 1e-6)
        assert h["v_ratio"] <= 4.0 * (1 + 1e-5)


def test_v_projected_steps_counts_the_steps_at_which_p_v_binds(tmp_path, make_spec):
    # zeta near the smallest |v0| and a tight gamma: the projection binds early, then v moves inside V.
    spec = make_spec(constraint={"radius": None, "zeta": 0.02, "gamma": 6.0}, metrics_every=1,
                     optim={"iterations": 40})
    result = train(spec, tmp_path)
    assert_counts_binding_steps(result.history, 0.02, 6.0)
    saved = latest_checkpoint(tmp_path).tensors["v_projected_steps"]
    assert saved.tolist() == [result.history[-1]["v_projected_steps"]]


def test_without_zeta_and_gamma_nothing_is_counted(tmp_path, make_spec):
    result = train(make_spec(), tmp_path)
    assert "v_projected_steps" not in result.final_metrics
    assert "v_projected_steps" not in latest_checkpoint(tmp_path).tensors


def test_nan_loss_raises_training_diverged(tmp_path, make_spec):
    spec = make_spec(optim={"lr_hidden": 100.0, "lr_outer": 100.0, "iterations": 200}, constraint={"radius": None})
    with pytest.raises(TrainingDiverged, match="diverged"):
        train(spec, tmp_path)


def test_stop_request_keeps_a_checkpoint_of_the_stop_step(tmp_path, make_spec):
    result = train(make_spec(), tmp_path, callbacks=StopAfter(30))
    assert result.status == "stopped"
    assert latest_checkpoint(tmp_path).step == 30


def test_tampered_checkpoint_is_refused(tmp_path, make_spec):
    train(make_spec(), tmp_path)
    path = latest_checkpoint(tmp_path).path
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(path)


def test_resume_with_a_different_spec_is_refused(tmp_path, make_spec):
    train(make_spec(), tmp_path)
    with pytest.raises(CheckpointError, match="different spec"):
        train(make_spec(seed=99), tmp_path)


def test_checkpoint_holds_weights_and_metadata_without_pickle(tmp_path, make_spec):
    train(make_spec(), tmp_path)
    ckpt = latest_checkpoint(tmp_path)
    tensors = load_file(str(ckpt.path))
    assert {"W", "v", "W0", "x_mean", "x_std"} <= set(tensors)
    meta = ckpt.meta
    assert meta["spec"]["name"] == "tiny" and meta["step"] == 60 and meta["final"] is True
    assert math.isfinite(meta["final_train_loss"]) and len(meta["sha256"]) == 64
    assert {"torch", "numpy", "python"} <= set(meta["versions"])
