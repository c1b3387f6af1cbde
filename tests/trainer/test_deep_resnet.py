"""ResNet-18 through train(): zero output at init, block 4 projected while the rest trains freely, resume with
augmentation on CIFAR-format files, predict, and the checks that keep it to image data."""

import pickle

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from tests.trainer.stop_after import StopAfter
from trainer.checkpoint import latest_checkpoint
from trainer.data import DataError, load_data
from trainer.deep import DeepLearner, build_model
from trainer.loop import train
from trainer.predict import predict
from trainer.spec import JobSpec


def resnet_spec(**overrides) -> JobSpec:
    """ResNet-18 with a 4-channel 4th block on 8x8 digits; nested dicts merge into the defaults."""
    spec = {
        "regime": "constrained", "model": {"arch": "resnet18", "block4_width": 4},
        "data": {"source": "digits", "limit": 30, "test_fraction": 0.2, "seed": 0}, "loss": "cross_entropy",
        "optim": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 8, "epochs": 2,
                  "schedule": "cosine"},
        "constraint": {"radius": 0.05}, "metrics_every": 1, "seed": 2, "device": "cpu",
    }
    for key, value in overrides.items():
        merge = isinstance(value, dict) and isinstance(spec.get(key), dict) and "source" not in value
        spec[key] = {**spec[key], **value} if merge else value
    return JobSpec.model_validate(spec)


def write_cifar10(root, n_per_batch=3, seed=0):
    """The real layout: pickled dicts with bytes keys, uint8 rows of 3072 values (R, G, B planes of 32x32)."""
    directory = root / "cifar-10-batches-py"
    directory.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"batch_label": b"test", b"data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
                 b"labels": rng.integers(0, 10, n_per_batch).tolist(),
                 b"filenames": [b"x.png"] * n_per_batch}
        (directory / name).write_bytes(pickle.dumps(batch, protocol=2))
    return root


def test_constrained_resnet_starts_at_zero_output_and_keeps_block_4_within_r(tmp_path):
    r = 0.05
    spec = resnet_spec(constraint={"radius": r})
    result = train(spec, tmp_path)
    first = result.history[0]
    assert first["train_loss"] == pytest.approx(np.log(10), rel=1e-6) and first["w_dist"] == 0.0
    dists = [h["w_dist"] for h in result.history]
    assert max(dists) <= r * (1 + 1e-5) and max(dists) == pytest.approx(r, rel=1e-4)
    data = load_data(spec.data)
    init = build_model(spec, data.input_shape, 10).state_dict()
    final = latest_checkpoint(tmp_path).tensors
    for prefix in ("stem.", "layer1.", "layer2.", "layer3.", "out."):
        diffs = [(final[f"model.{k}"] - t).flatten() for k, t in init.items()
                 if k.startswith(prefix) and t.is_floating_point() and "running" not in k]
        assert torch.linalg.vector_norm(torch.cat(diffs)).item() > 2 * r, prefix
    block4 = [(final[f"model.{k}"] - init[k]).flatten() for k, _ in build_model(spec, (1, 8, 8), 10)
              .named_parameters() if k.startswith("layer4.")]
    assert torch.linalg.vector_norm(torch.cat(block4)).item() == pytest.approx(dists[-1], rel=1e-4)


@pytest.mark.slow
def test_resume_with_augmentation_equals_uninterrupted_run(tmp_path):
    """CIFAR-format files, pad-4 crop + flip on: batch order and augmentation replay bit for bit after a resume."""
    write_cifar10(tmp_path / "data")
    spec = resnet_spec(data={"source": "cifar10", "augment": True}, optim={"batch_size": 4}, checkpoint_every=3,
                       metrics_every=5)
    full = train(spec, tmp_path / "full", data_dir=tmp_path / "data")
    assert full.total_steps == 8  # 15 images in batches of 4, 2 epochs
    stopped = train(spec, tmp_path / "resumed", data_dir=tmp_path / "data", callbacks=StopAfter(5))
    assert stopped.status == "stopped" and stopped.step == 5  # mid-epoch
    resumed = train(spec, tmp_path / "resumed", data_dir=tmp_path / "data")
    ref, got = latest_checkpoint(tmp_path / "full").tensors, latest_checkpoint(tmp_path / "resumed").tensors
    assert set(ref) == set(got)
    assert any(k.endswith("running_mean") for k in ref) and any(k.startswith("opt.") for k in ref)
    for name in ref:
        assert torch.equal(ref[name], got[name]), name
    assert resumed.final_metrics == full.final_metrics


def test_augmentation_is_applied_when_the_spec_asks(tmp_path):
    write_cifar10(tmp_path)

    def one_step(augment):
        # Regular regime: under the mirrored init the layers below block 4 get exactly zero gradient at step 0.
        spec = resnet_spec(regime="regular", data={"source": "cifar10", "augment": augment}, optim={"batch_size": 4})
        learner = DeepLearner(spec, load_data(spec.data, data_dir=tmp_path), torch.device("cpu"))
        learner.step(0)
        return learner.model.stem[0].weight.detach().clone()

    assert not torch.equal(one_step(True), one_step(False))
    assert torch.equal(one_step(True), one_step(True))


def test_regular_resnet_with_a_ball_projects_block_4_too(tmp_path):
    result = train(resnet_spec(regime="regular", constraint={"radius": 0.05}, optim={"epochs": 1}), tmp_path)
    assert result.history[0]["train_loss"] != pytest.approx(np.log(10), rel=1e-3)  # no zero-output init
    assert max(h["w_dist"] for h in result.history) <= 0.05 * (1 + 1e-5)


def test_predict_from_a_resnet_checkpoint_reproduces_the_test_accuracy(tmp_path):
    spec = resnet_spec(constraint={"radius": None}, optim={"epochs": 1}, metrics_every=100)
    result = train(spec, tmp_path)
    data = load_data(spec.data)
    logits = predict(latest_checkpoint(tmp_path), data.X_test * data.x_std + data.x_mean)
    assert logits.shape == (data.n_test, 10)
    accuracy = (logits.argmax(1) == data.y_test).float().mean().item()
    assert accuracy == pytest.approx(result.final_metrics["test_accuracy"], abs=1e-6)


def test_a_last_batch_of_one_image_is_dropped_for_batchnorm():
    spec = resnet_spec(data={"source": "digits", "limit": 21, "test_fraction": 0.0}, optim={"batch_size": 4})
    learner = DeepLearner(spec, load_data(spec.data), torch.device("cpu"))
    assert learner.steps_per_epoch == 5 and learner.total_steps == 10  # 21 = 5 x 4 + 1
    learner.step(4)  # the epoch's last batch has 4 images, not 1


def test_tabular_data_is_refused_for_resnet_naming_model_arch(tmp_path):
    path = tmp_path / "tab.npz"
    np.savez(path, X=np.random.default_rng(0).normal(size=(30, 5)).astype(np.float32),
             y=np.arange(30) % 3)
    spec = resnet_spec(data={"source": "npz", "path": str(path)})
    with pytest.raises(DataError, match="model.arch: resnet18 needs image data"):
        train(spec, tmp_path / "run")


@pytest.mark.parametrize("change,field", [
    ({"data": {"source": "synthetic", "n": 10, "d": 3}, "loss": "square"}, "model.arch"),
    ({"optim": {"batch_size": None}}, "optim.batch_size"),
    ({"optim": {"batch_size": 1}}, "optim.batch_size"),
    ({"jacobian_every": 10}, "jacobian_every"),
    ({"model": {"block4_width": 5}}, "model.block4_width"),
])
def test_bad_resnet_specs_are_refused_naming_the_field(change, field):
    with pytest.raises(ValidationError, match=field):
        resnet_spec(**change)
