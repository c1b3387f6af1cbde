"""From raw arrays to a Dataset: seeded subsampling, train/test split, label shuffling, standardization.

All randomness comes from one torch.Generator seeded with the spec's seed and consumed in a fixed
order (limit, then split, then random labels), so the same spec gives the same Dataset everywhere.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from trainer.data.dataset import Dataset, identity_stats, standardization_stats, standardize
from trainer.data.errors import DataError
from trainer.data.npz import DEFAULT_MAX_BYTES, DEFAULT_MAX_UNCOMPRESSED_BYTES, read_npz
from trainer.data.task import Task
from trainer.spec import _Split


def _to_tensor(a: np.ndarray) -> torch.Tensor:
    a = np.ascontiguousarray(a)
    # Tensors share memory with their array; a read-only (cached) array must not be written through.
    return torch.from_numpy(a if a.flags.writeable else a.copy())


def as_inputs(X: np.ndarray) -> torch.Tensor:
    return _to_tensor(np.asarray(X, dtype=np.float32))


def as_targets(y: np.ndarray, task: Task) -> torch.Tensor:
    if task == "classification":
        return _to_tensor(np.asarray(y, dtype=np.int64))
    y = np.asarray(y, dtype=np.float32)
    return _to_tensor(y.reshape(len(y), -1))


def subsample(n: int, k: int, g: torch.Generator) -> torch.Tensor:
    """k of n indices chosen uniformly at random, in their original order."""
    return torch.randperm(n, generator=g)[:k].sort().values


def split_indices(
    y: torch.Tensor, test_fraction: float, g: torch.Generator, *, stratify: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded train/test index split; stratified keeps class proportions (up to rounding)."""
    n = len(y)
    n_test = min(max(round(test_fraction * n), 1), n - 1) if test_fraction > 0 else 0
    perm = torch.randperm(n, generator=g)
    if n_test == 0:
        return perm.sort().values, perm[:0]
    if not stratify:
        return perm[n_test:].sort().values, perm[:n_test].sort().values
    # Stable sort of a random permutation by class: each class's members in random order, contiguous.
    by_class = perm[torch.sort(y[perm], stable=True).indices]
    counts = torch.bincount(y)
    quota = test_fraction * counts.to(torch.float64)
    take = quota.floor().to(torch.int64)
    # Largest remainders get the leftover test slots, so the total is exactly n_test.
    leftover = n_test - int(take.sum())
    order = torch.sort(quota - take, descending=True, stable=True).indices
    take[order[:leftover]] += 1
    starts = torch.cumsum(counts, 0) - counts
    is_test = torch.zeros(n, dtype=torch.bool)
    for c in torch.nonzero(take).flatten().tolist():
        is_test[by_class[starts[c] : starts[c] + take[c]]] = True
    return torch.nonzero(~is_test).flatten(), torch.nonzero(is_test).flatten()


def build_dataset(
    X: np.ndarray,
    y: np.ndarray,
    split: _Split,
    *,
    task: Task,
    num_classes: int | None,
    X_test: np.ndarray | None = None,
    y_test: np.ndarray | None = None,
) -> Dataset:
    """Apply the spec's limit, split, random_labels and standardize to raw arrays.

    Without X_test the pool is split by test_fraction (stratified for classification). With a given
    test set, `limit` caps train + test together, keeping the source's train:test ratio.
    """
    g = torch.Generator().manual_seed(split.seed)
    Xt, yt = as_inputs(X), as_targets(y, task)
    if X_test is None:
        if split.limit is not None and split.limit < len(Xt):
            keep = subsample(len(Xt), split.limit, g)
            Xt, yt = Xt[keep], yt[keep]
        train, test = split_indices(yt, split.test_fraction, g, stratify=task == "classification")
        X_tr, y_tr, X_te, y_te = Xt[train], yt[train], Xt[test], yt[test]
    else:
        if y_test is None:
            raise DataError("y_test", "missing: X_test and y_test come together")
        X_tr, y_tr = Xt, yt
        X_te, y_te = as_inputs(X_test), as_targets(y_test, task)
        total = len(X_tr) + len(X_te)
        if split.limit is not None and split.limit < total:
            k_train = max(round(split.limit * len(X_tr) / total), 1)
            k_test = split.limit - k_train
            keep = subsample(len(X_tr), k_train, g)
            X_tr, y_tr = X_tr[keep], y_tr[keep]
            keep = subsample(len(X_te), min(k_test, len(X_te)), g)
            X_te, y_te = X_te[keep], y_te[keep]
    if split.random_labels:
        # Memorization test: permuting keeps the label multiset; test labels stay true.
        y_tr = y_tr[torch.randperm(len(y_tr), generator=g)]
    mean, std = standardization_stats(X_tr) if split.standardize else identity_stats(X_tr)
    if split.standardize:
        X_tr, X_te = standardize(X_tr, mean, std), standardize(X_te, mean, std)
    return Dataset(
        X_train=X_tr.contiguous(),
        y_train=y_tr.contiguous(),
        X_test=X_te.contiguous(),
        y_test=y_te.contiguous(),
        task=task,
        num_classes=num_classes,
        x_mean=mean,
        x_std=std,
    )


def load_npz(path: Path, split: _Split) -> Dataset:
    """An .npz as a Dataset; test_fraction applies only when the file has no X_test of its own."""
    a = read_npz(path, max_bytes=DEFAULT_MAX_BYTES, max_uncompressed_bytes=DEFAULT_MAX_UNCOMPRESSED_BYTES)
    return build_dataset(
        a.X, a.y, split, task=a.task, num_classes=a.num_classes, X_test=a.X_test, y_test=a.y_test
    )
