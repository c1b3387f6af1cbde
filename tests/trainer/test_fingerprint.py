"""spec_hash: the same result gets the same hash however the spec is spelled, and anything that changes the
result (a hyperparameter, the data's bytes, the versions) changes it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trainer.checkpoint import latest_checkpoint
from trainer.cli import local_spec_hash
from trainer.fingerprint import data_identity, result_versions, spec_hash
from trainer.loop import train
from trainer.spec import JobSpec

BASE = {"name": "a", "regime": "constrained", "model": {"arch": "shallow", "width": 8},
        "data": {"source": "synthetic", "n": 20, "d": 3}, "optim": {"name": "gd", "lr": 0.1, "iterations": 5}}


def h(spec: dict, data: str = "spec", versions: dict | None = None) -> str:
    return spec_hash(JobSpec.model_validate(spec), data, versions or {"narrownet": "1", "torch": "2"})


def test_spelling_defaults_and_the_name_do_not_change_the_hash() -> None:
    spelled = {**BASE, "name": "renamed", "loss": "square", "seed": 0, "metrics_every": 100,
               "model": {"arch": "shallow", "width": 8, "activation": "tanh"},
               "optim": {"name": "gd", "lr": 1e-1, "iterations": 5, "momentum": 0, "weight_decay": 0.0},
               "constraint": {"radius": None}}
    assert h(spelled) == h(BASE)
    assert len(h(BASE)) == 64


@pytest.mark.parametrize("change", [
    {"optim": {"name": "gd", "lr": 0.1000001, "iterations": 5}}, {"seed": 1}, {"regime": "regular"},
    {"constraint": {"radius": 2.0}}, {"data": {"source": "synthetic", "n": 20, "d": 3, "seed": 1}},
    {"device": "cuda"}, {"metrics_every": 1},
])
def test_what_changes_the_run_or_its_record_changes_the_hash(change: dict) -> None:
    assert h({**BASE, **change}) != h(BASE)


def test_versions_and_data_content_change_the_hash() -> None:
    assert h(BASE, versions={"narrownet": "1", "torch": "3"}) != h(BASE)
    by_id = {**BASE, "data": {"source": "dataset", "id": "abc"}}
    by_name = {**BASE, "data": {"source": "dataset", "name": "toy", "id": "def"}}
    assert h(by_id, "sha256:1") == h(by_name, "sha256:1")  # where the bytes are stored does not matter
    assert h(by_id, "sha256:1") != h(by_id, "sha256:2")


def test_versions_come_from_installed_metadata_without_importing_torch() -> None:
    import torch

    assert result_versions()["torch"] == torch.__version__


def test_data_identity_follows_file_content_and_is_none_when_unreadable(tmp_path) -> None:
    mnist = JobSpec.model_validate({**BASE, "data": {"source": "mnist"}}).data
    assert data_identity(mnist, data_dir=None) is None
    assert data_identity(mnist, data_dir=tmp_path) is None  # the files are missing
    (tmp_path / "mnist").mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (tmp_path / "mnist" / name).write_bytes(b"x")
    first = data_identity(mnist, data_dir=tmp_path)
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte").write_bytes(b"yy")
    assert first is not None and data_identity(mnist, data_dir=tmp_path) not in (None, first)
    digits = JobSpec.model_validate({**BASE, "data": {"source": "digits"}}).data
    assert data_identity(digits).startswith("scikit-learn==")


def test_checkpoints_carry_the_spec_hash_the_cli_computes(tmp_path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, X=np.ones((6, 2)), y=np.arange(6.0))
    spec = JobSpec.model_validate({**BASE, "data": {"source": "npz", "path": str(path), "test_fraction": 0}})
    expected = local_spec_hash(spec, None)
    assert expected == spec_hash(spec, data_identity(spec.data))
    train(spec, tmp_path / "run", spec_hash=expected)
    meta = json.loads(latest_checkpoint(tmp_path / "run").path.with_suffix(".json").read_text())
    assert meta["spec_hash"] == expected
    np.savez(path, X=np.ones((6, 2)), y=np.arange(6.0) + 1)  # other bytes at the same path: another result
    assert local_spec_hash(spec, None) != expected


@pytest.mark.parametrize("data", [BASE["data"], {"source": "dataset", "name": "mine", "id": "d1"},
                                  {"source": "npz", "path": "/tmp/x.npz"}])
def test_a_spec_hashed_from_a_dump_made_before_hashes_the_same_and_the_dump_is_left_alone(data: dict) -> None:
    spec = JobSpec.model_validate({**BASE, "data": data})
    dumped = spec.model_dump(mode="json")
    before = json.dumps(dumped)

    assert spec_hash(spec, "sha256:x", dumped=dumped) == spec_hash(spec, "sha256:x")
    assert json.dumps(dumped) == before
