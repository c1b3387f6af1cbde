"""torch.optim state as flat named tensors (safetensors holds tensors only; a checkpoint never pickles).

    opt.<parameter name>.<state key>   e.g. opt.layer4.0.conv1.weight.momentum_buffer, opt.out.bias.exp_avg

Hyperparameters are not stored: they come from the spec, and the learning rate is set from the schedule each step.
"""

from __future__ import annotations

import torch
from torch import Tensor

from trainer.checkpoint import CheckpointError

PREFIX = "opt."


def flatten_optimizer_state(opt: torch.optim.Optimizer, names: dict[int, str]) -> dict[str, Tensor]:
    """names: id(parameter) -> its name in the model."""
    out: dict[str, Tensor] = {}
    for param, state in opt.state.items():
        for key, value in state.items():
            if isinstance(value, Tensor):  # SGD without momentum keeps momentum_buffer=None
                out[f"{PREFIX}{names[id(param)]}.{key}"] = value
    return out


def load_optimizer_state(opt: torch.optim.Optimizer, names: dict[int, str], tensors: dict[str, Tensor]) -> None:
    """Inverse of flatten_optimizer_state; every opt.* tensor must belong to a parameter the optimizer holds."""
    params = [p for group in opt.param_groups for p in group["params"]]
    index = {names[id(p)]: i for i, p in enumerate(params)}
    state: dict[int, dict[str, Tensor]] = {}
    for full, value in tensors.items():
        if not full.startswith(PREFIX):
            continue
        name, _, key = full[len(PREFIX):].rpartition(".")
        if name not in index:
            raise CheckpointError(f"tensor {full}: no parameter {name!r} in this model")
        target = params[index[name]]
        if key != "step" and tuple(value.shape) != tuple(target.shape):
            raise CheckpointError(f"tensor {full}: shape {tuple(value.shape)} != {tuple(target.shape)}")
        state.setdefault(index[name], {})[key] = value.clone()
    saved = opt.state_dict()
    # torch.optim.load_state_dict casts the state to each parameter's dtype and device (Adam's step stays as is).
    opt.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
