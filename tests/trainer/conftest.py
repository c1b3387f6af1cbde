import pytest

from trainer.spec import JobSpec


def shallow_spec(**overrides) -> JobSpec:
    """A tiny synthetic shallow job; nested dict overrides merge into the defaults (data is replaced whole)."""
    spec = {
        "name": "tiny", "regime": "constrained",
        "model": {"arch": "shallow", "width": 16, "activation": "tanh"},
        "data": {"source": "synthetic", "n": 40, "d": 6, "seed": 0},
        "loss": "square",
        "optim": {"name": "sgd", "momentum": 0.9, "lr_hidden": 0.2, "lr_outer": 0.2, "iterations": 60},
        "constraint": {"radius": 2.0},
        "metrics_every": 10, "seed": 3, "device": "cpu",
    }
    for key, value in overrides.items():
        if key != "data" and isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return JobSpec.model_validate(spec)


@pytest.fixture
def make_spec():
    return shallow_spec


@pytest.fixture
def one_thread():
    """One torch thread: a config's arithmetic is then the same alone and in a pack (trainer/shallow/net.py
    Workspace); with more, torch splits elementwise work at boundaries that depend on the pack's size."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
