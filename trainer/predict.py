"""Predictions from a checkpoint: rebuild the net from its stored spec and weights."""

from __future__ import annotations

import torch

from trainer.checkpoint import Checkpoint
from trainer.data import standardize
from trainer.shallow import forward
from trainer.spec import JobSpec, ShallowModel


def predict(ckpt: Checkpoint, X: torch.Tensor) -> torch.Tensor:
    """Raw outputs f(X) (n, k) for inputs in the training data's original units (standardized here)."""
    spec = JobSpec.model_validate(ckpt.meta["spec"])
    if not isinstance(spec.model, ShallowModel):
        raise NotImplementedError(f"predict for model.arch {spec.model.arch!r}")
    t = ckpt.tensors
    X = standardize(X.to(torch.float32), t["x_mean"], t["x_std"]).flatten(1)
    if X.shape[1] != t["W"].shape[1]:
        raise ValueError(f"X: {X.shape[1]} features per sample, the model expects {t['W'].shape[1]}")
    with torch.no_grad():
        return forward(X, t["W"][None], t["v"][None], spec.model.activation, spec.regime == "constrained")[0]
