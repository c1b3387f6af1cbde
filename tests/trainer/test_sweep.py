import math

import pytest
import torch
from pydantic import ValidationError

from trainer.data import load_data
from trainer.shallow.learner import ConfigGrid, ShallowLearner
from trainer.sweep import SweepSpec, run_sweep


def _run_alone(spec, data):
    learner = ShallowLearner(spec, data, ConfigGrid.single(spec), torch.device("cpu"))
    for step in range(learner.total_steps):
        learner.step(step)
    return learner.W[0], {k: v[0].item() for k, v in learner.evaluate().items()}


@pytest.mark.parametrize("optim", [{"name": "sgd", "momentum": 0.9},
                                   {"name": "sgd", "momentum": 0.9, "batch_size": 8, "iterations": None,
                                    "epochs": 5, "schedule": "cosine"},
                                   {"name": "adam", "lr_hidden": 0.01, "lr_outer": 0.01}])
def test_each_sweep_config_matches_training_it_alone(make_spec, optim):
    base = make_spec(optim=optim)
    sweep = SweepSpec(base=base, lr_hidden=[0.05, 0.3], lr_outer=[0.1, 0.02], radius=[0.5, None], seed=[3, 4])
    assert len(sweep.configs()) == 16
    data = load_data(base.data)
    result = run_sweep(sweep, data=data)
    for i in range(len(sweep.configs())):
        W_alone, metrics = _run_alone(sweep.config_spec(i), data)
        torch.testing.assert_close(result.weights[i], W_alone, rtol=1e-4, atol=1e-5)
        assert result.final[i]["train_loss"] == pytest.approx(metrics["train_loss"], rel=1e-4, abs=1e-7)


def test_sweep_configs_are_independent_when_some_diverge(make_spec):
    base = make_spec(constraint={"radius": None}, optim={"iterations": 100})
    sweep = SweepSpec(base=base, lr_hidden=[0.1, 100.0], lr_outer=[0.1, 100.0])
    result = run_sweep(sweep)
    finite = [math.isfinite(f["train_loss"]) for f in result.final]
    assert finite[0] and not all(finite)
    alone = _run_alone(sweep.config_spec(0), load_data(base.data))[1]["train_loss"]
    assert result.final[0]["train_loss"] == pytest.approx(alone, rel=1e-4)


def test_oversized_grid_is_rejected_naming_the_field(make_spec):
    with pytest.raises(ValidationError, match="lr_hidden"):
        SweepSpec(base=make_spec(), lr_hidden=[0.1] * 64, lr_outer=[0.1] * 64, seed=list(range(2)))
