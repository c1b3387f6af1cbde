"""CIFAR python batches written the way CIFAR ships them, for tests that need CIFAR-format files on disk."""

import pickle

import numpy as np


def write_batch(path, n, label_key, num_classes, seed, protocol=2, labels_as_list=False):
    """One batch as CIFAR ships it: a dict with bytes keys, uint8 (n, 3072) rows (R, G, B planes)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, n)
    batch = {
        b"batch_label": b"testing batch",
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        label_key: labels.tolist() if labels_as_list else labels,
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=protocol)
    return batch


def make_cifar10(root, protocol=2, per_batch=3):
    """root/cifar-10-batches-py/ with data_batch_1..5 and test_batch of `per_batch` random images each."""
    directory = root / "cifar-10-batches-py"
    directory.mkdir()
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    # Real CIFAR-10 stores labels as a Python list; alternate list and array to cover both.
    return {
        name: write_batch(directory / name, per_batch, b"labels", 10, seed=i, protocol=protocol,
                          labels_as_list=i % 2)
        for i, name in enumerate(names)
    }
