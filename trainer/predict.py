"""Predictions from a checkpoint: rebuild the net from its stored spec and weights."""

from __future__ import annotations

import torch

from trainer.checkpoint import Checkpoint
from trainer.data import standardize
from trainer.losses import accuracy, loss_value
from trainer.shallow.net import forward
from trainer.spec import JobSpec, ResNet18Model, ShallowModel


def predict(ckpt: Checkpoint, X: torch.Tensor) -> torch.Tensor:
    """Raw outputs f(X) (n, k) for inputs in the units the data source yields (standardized here)."""
    spec = JobSpec.model_validate(ckpt.meta["spec"])
    if not isinstance(spec.model, ShallowModel):
        return _predict_deep(spec, ckpt, X)
    t = ckpt.tensors
    expected = t["W"].shape[1]
    # Checked before anything touches X: a wrong width must be this message, not a broadcasting error.
    if X.ndim < 2 or X[0].numel() != expected:
        got = X[0].numel() if X.ndim >= 2 else "1"
        raise ValueError(f"X: {got} features per sample, the model expects {expected} (X must be (n, {expected}))")
    X = X.to(torch.float32)
    if t["x_mean"].ndim == 3 and X.ndim == 2:
        # Trained on images with per-channel statistics (C, 1, 1): view flat rows as (n, C, pixels) to apply them.
        X = X.view(len(X), t["x_mean"].shape[0], -1)
        X = standardize(X, t["x_mean"].view(-1, 1), t["x_std"].view(-1, 1))
    else:
        X = standardize(X, t["x_mean"], t["x_std"])
    X = X.flatten(1)
    with torch.no_grad():
        return forward(X, t["W"][None], t["v"][None], spec.model.activation, spec.regime == "constrained")[0]


def _predict_deep(spec: JobSpec, ckpt: Checkpoint, X: torch.Tensor) -> torch.Tensor:
    from trainer.deep import model_for_tensors  # torch.nn models only when a deep checkpoint is used
    from trainer.deep.mlp import MLP

    t = ckpt.tensors
    model = model_for_tensors(spec, t)
    model.load_state_dict({k[len("model."):]: v for k, v in t.items() if k.startswith("model.")})
    model.eval()  # BatchNorm from its running statistics
    if t["x_mean"].ndim == 3 and X.ndim != 4:  # per-channel statistics would broadcast wrongly over (n, d)
        raise ValueError(f"X: the model was trained on images (n, C, H, W), got shape {tuple(X.shape)}")
    # Shapes are checked before standardizing: a wrong shape must be this message, not a broadcasting error.
    if isinstance(spec.model, ResNet18Model):
        channels = t["model.stem.0.weight"].shape[1]
        if X.ndim != 4 or X.shape[1] != channels:
            raise ValueError(f"X: resnet18 expects images (n, {channels}, H, W), got shape {tuple(X.shape)}")
    elif isinstance(model, MLP):
        features = model.in_features
        if X.ndim < 2 or X.flatten(1).shape[1] != features:
            raise ValueError(f"X: {X.flatten(1).shape[1] if X.ndim >= 2 else 1} features per sample, the model "
                             f"expects {features}")
    X = standardize(X.to(torch.float32), t["x_mean"], t["x_std"])
    with torch.no_grad():
        return torch.cat([model(X[i:i + 1024]) for i in range(0, len(X), 1024)]) if len(X) else model(X)


def score(ckpt: Checkpoint, F: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """The checkpoint's loss (and accuracy, for integer labels) of predictions F (n, k) against targets y."""
    spec = JobSpec.model_validate(ckpt.meta["spec"])
    if len(y) != len(F):
        raise ValueError(f"y: {len(y)} targets for {len(F)} samples in X")
    if y.dtype.is_floating_point:
        return {"loss": float(loss_value(F[None], y.float().reshape(len(y), -1), "square")[0])}
    labels = y.long()
    target = labels if spec.loss == "cross_entropy" else torch.nn.functional.one_hot(labels, F.shape[1]).float()
    return {"loss": float(loss_value(F[None], target, spec.loss)[0]), "accuracy": float(accuracy(F[None], labels)[0])}
