import json

import pytest
from pydantic import ValidationError

from trainer.spec import JobSpec

BASE = {"regime": "constrained", "model": {"arch": "shallow", "width": 100, "activation": "tanh"},
        "data": {"source": "synthetic", "n": 1000, "d": 20, "seed": 0}, "loss": "square",
        "optim": {"name": "sgd", "momentum": 0.9, "lr_hidden": 0.1, "lr_outer": 0.1, "iterations": 20000},
        "constraint": {"radius": 1.0, "zeta": None, "gamma": None}, "seed": 1}


def with_(path, value):
    spec = json.loads(json.dumps(BASE))
    *parents, leaf = path.split(".")
    node = spec
    for p in parents:
        node = node[p]
    node[leaf] = value
    return spec


def error_text(spec):
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate(spec)
    return " | ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in info.value.errors())


def test_issue_example_spec_is_valid_and_round_trips():
    spec = JobSpec.model_validate(BASE)
    assert JobSpec.model_validate_json(spec.model_dump_json()) == spec
    assert spec.optim.hidden_lr == 0.1 and spec.radius == 1.0


def test_plain_lr_sets_both_learning_rates():
    spec = JobSpec.model_validate(with_("optim", {"lr": 0.05, "iterations": 10}))
    assert (spec.optim.hidden_lr, spec.optim.outer_lr) == (0.05, 0.05)


@pytest.mark.parametrize("path,value,field", [
    ("model.width", 7, "model.width"),
    ("model.width", 10**9, "model.shallow.width"),
    ("constraint.radius", 0, "constraint.radius"),
    ("constraint.radius", -1.0, "constraint.radius"),
    ("optim.lr_hidden", float("nan"), "optim.lr_hidden"),
    ("optim.lr_outer", -0.1, "optim.lr_outer"),
    ("optim.lr_outer", 1e6, "optim.lr_outer"),
    ("optim.momentum", 1.5, "optim.momentum"),
    ("optim.iterations", 0, "optim.iterations"),
    ("optim.iterations", 10**12, "optim.iterations"),
    ("data.n", 10**9, "data.synthetic.n"),
    ("regime", "fancy", "regime"),
    ("model.activation", "gelu", "model.shallow.activation"),
    ("optim.schedule", "warp", "optim.schedule"),
    ("loss", "cross_entropy", "loss"),
    ("constraint.gamma", 0.5, "constraint.gamma"),
    ("seed", -1, "seed"),
    ("device", "tpu", "device"),
    ("optim.batch_size", 0, "optim.batch_size"),
])
def test_bad_spec_is_rejected_naming_the_field(path, value, field):
    assert field in error_text(with_(path, value))


def test_unknown_field_is_rejected_naming_it():
    spec = with_("optim.learning_rate", 0.1)
    assert "optim.learning_rate" in error_text(spec)


def test_lr_and_per_layer_rates_together_are_rejected():
    assert "optim.lr" in error_text(with_("optim.lr", 0.1))


def test_exactly_one_of_iterations_and_epochs():
    spec = with_("optim.epochs", 3)
    assert "optim.iterations" in error_text(spec)


def test_zeta_in_regular_regime_is_rejected():
    spec = with_("regime", "regular")
    spec["constraint"]["zeta"] = 0.1
    assert "constraint.zeta" in error_text(spec)


def test_odd_width_is_fine_in_the_regular_regime():
    spec = with_("model.width", 7)
    spec["regime"] = "regular"
    assert JobSpec.model_validate(spec).model.width == 7
