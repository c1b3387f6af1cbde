"""The loaded data set handed to the trainer, and the standardization it was built with."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trainer.data.task import Task


@dataclass(frozen=True, eq=False)  # eq on tensors is ambiguous; compare fields with torch.equal
class Dataset:
    """Train and test tensors on the CPU.

    X is float32 (n, d) for tabular data or (n, C, H, W) for images. y is int64 (n,) for
    classification and float32 (n, k) for regression. x_mean/x_std hold the training-set
    standardization (shape (d,) or (C, 1, 1), so they broadcast against X); zeros and ones when the
    data was not standardized. X_train/X_test are already standardized with them.
    """

    X_train: torch.Tensor
    y_train: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor
    task: Task
    num_classes: int | None
    x_mean: torch.Tensor
    x_std: torch.Tensor

    def __post_init__(self) -> None:
        # Cheap invariant checks: a Dataset built by hand elsewhere must look like a loaded one.
        for name in ("X_train", "X_test"):
            X = getattr(self, name)
            if X.dtype != torch.float32 or X.ndim not in (2, 4):
                raise ValueError(f"{name}: expected float32 with 2 or 4 dims, got {X.dtype} {tuple(X.shape)}")
        if self.X_test.shape[1:] != self.X_train.shape[1:]:
            raise ValueError(f"X_test: sample shape {tuple(self.X_test.shape[1:])} != {self.input_shape}")
        want = torch.int64 if self.task == "classification" else torch.float32
        for X_name, y_name in (("X_train", "y_train"), ("X_test", "y_test")):
            y = getattr(self, y_name)
            if y.dtype != want or y.ndim != (1 if self.task == "classification" else 2):
                raise ValueError(f"{y_name}: {self.task} needs {want} labels, got {y.dtype} {tuple(y.shape)}")
            if len(y) != len(getattr(self, X_name)):
                raise ValueError(f"{y_name}: {len(y)} labels for {len(getattr(self, X_name))} samples")
        if (self.task == "classification") != (self.num_classes is not None):
            raise ValueError("num_classes: set for classification only")
        if self.y_test.ndim == 2 and self.y_test.shape[1] != self.y_train.shape[1]:
            raise ValueError("y_test: output dimension differs from y_train")

    def __repr__(self) -> str:  # the default would print every tensor
        return (
            f"Dataset(task={self.task!r}, n_train={self.n_train}, n_test={self.n_test}, "
            f"input_shape={self.input_shape}, output_dim={self.output_dim})"
        )

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.X_train.shape[1:])

    @property
    def n_train(self) -> int:
        return self.X_train.shape[0]

    @property
    def n_test(self) -> int:
        return self.X_test.shape[0]

    @property
    def output_dim(self) -> int:
        return self.num_classes if self.num_classes is not None else self.y_train.shape[1]


def standardization_stats(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std per feature (2-D X) or per channel (4-D X), shaped to broadcast against X.

    Computed in float64 so large image sets do not lose precision. A constant feature gets std 1,
    so standardizing never divides by zero.
    """
    dims = (0,) if X.ndim == 2 else (0, 2, 3)
    X64 = X.to(torch.float64)
    mean = X64.mean(dim=dims, keepdim=True)
    std = X64.std(dim=dims, keepdim=True, correction=0)
    std = torch.where(std > 1e-12, std, torch.ones_like(std))
    return mean[0].to(torch.float32), std[0].to(torch.float32)


def identity_stats(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Zeros and ones in the shape standardization_stats would give: 'not standardized'."""
    shape = (X.shape[1],) if X.ndim == 2 else (X.shape[1], 1, 1)
    return torch.zeros(shape, dtype=torch.float32), torch.ones(shape, dtype=torch.float32)


def standardize(X: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(X - mean) / std with the stored training statistics; used at load and at predict time."""
    return (X - mean.to(X)) / std.to(X)
