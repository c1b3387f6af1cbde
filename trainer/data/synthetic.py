"""The paper's synthetic regression data: unit-norm Gaussian inputs, Gaussian or teacher labels."""

from __future__ import annotations

import math

import torch

from trainer.data.dataset import Dataset, identity_stats
from trainer.spec import SyntheticData

TEACHER_WIDTH = 32


def unit_gaussian_rows(n: int, d: int, g: torch.Generator) -> torch.Tensor:
    """x ~ N(0, I_d), then x / ||x|| (the paper's recipe)."""
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    return X / X.norm(dim=1, keepdim=True)


def load_synthetic(spec: SyntheticData) -> Dataset:
    """Deterministic for spec.seed on every machine: float64 on the CPU, cast to float32 at the end.

    Training points are drawn before test points, so n_test never changes the training set; the
    teacher's output is scaled to unit variance on the training points. Not standardized: unit-norm
    inputs are the recipe.
    """
    g = torch.Generator().manual_seed(spec.seed)
    if spec.labels == "teacher":
        # Random 1-hidden-layer tanh teacher with LeCun init: W ~ N(0, 1/d), v ~ N(0, 1/width).
        W = torch.randn(TEACHER_WIDTH, spec.d, generator=g, dtype=torch.float64) / math.sqrt(spec.d)
        v = torch.randn(TEACHER_WIDTH, 1, generator=g, dtype=torch.float64) / math.sqrt(TEACHER_WIDTH)

        def labels(X: torch.Tensor) -> torch.Tensor:
            return torch.tanh(X @ W.T) @ v
    else:

        def labels(X: torch.Tensor) -> torch.Tensor:
            return torch.randn(len(X), 1, generator=g, dtype=torch.float64)

    X_train = unit_gaussian_rows(spec.n, spec.d, g)
    y_train = labels(X_train)
    X_test = unit_gaussian_rows(spec.n_test, spec.d, g)
    y_test = labels(X_test)
    if spec.labels == "teacher":
        scale = y_train.std()
        scale = scale if scale > 0 else torch.ones((), dtype=torch.float64)
        y_train, y_test = y_train / scale, y_test / scale
    mean, std = identity_stats(X_train)
    return Dataset(
        X_train=X_train.float(),
        y_train=y_train.float(),
        X_test=X_test.float(),
        y_test=y_test.float(),
        task="regression",
        num_classes=None,
        x_mean=mean,
        x_std=std,
    )
