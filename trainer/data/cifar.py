"""CIFAR-10/100 python batches, read with an unpickler that can build numpy arrays and nothing else.

The batches are pickles, and a pickle can call any importable function. find_class is the only door
through which a pickle reaches a global, so it admits exactly the constructors numpy arrays need.
"""

from __future__ import annotations

import codecs
import io
import pickle
from pathlib import Path

import numpy as np
from numpy._core.multiarray import _reconstruct
from numpy._core.numeric import _frombuffer  # type: ignore[attr-defined]  # private; CIFAR pickles name it

from trainer.data.dataset import Dataset
from trainer.data.errors import DataError
from trainer.data.files import CIFAR_LAYOUT, source_files
from trainer.data.prepare import build_dataset
from trainer.spec import CifarData

MAX_BATCH_BYTES = 1 << 30  # a CIFAR batch is ~30 MB (CIFAR-100 train ~150 MB)


def _latin1_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    # Python 3 writes bytes into protocol-2 pickles as _codecs.encode(text, "latin1"); only that form.
    if codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return codecs.encode(text, "latin1", errors)


ALLOWED_GLOBALS = {
    # Python 2 era files (the real CIFAR batches) name numpy.core; numpy 2 writes numpy._core.
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,  # protocol 5
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent ids are not allowed")


def read_batch(path: Path) -> dict:
    """One CIFAR batch file as a dict with bytes keys; DataError for anything but plain data."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BATCH_BYTES + 1)
    except OSError as exc:
        raise DataError("data.source", f"{path}: cannot read: {exc}") from exc
    if len(raw) > MAX_BATCH_BYTES:
        raise DataError("data.source", f"{path}: larger than {MAX_BATCH_BYTES} bytes")
    try:
        batch = RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as exc:  # any failure to decode untrusted bytes is bad data, whatever its type
        raise DataError("data.source", f"{path}: refused: {exc}") from exc
    if not isinstance(batch, dict):
        raise DataError("data.source", f"{path}: expected a dict, got {type(batch).__name__}")
    return batch


def batch_arrays(path: Path, label_key: bytes, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """b"data" (N, 3072) uint8 -> (N, 3, 32, 32) in [0, 1]; labels as int64 in [0, num_classes)."""
    batch = read_batch(path)
    data, labels = batch.get(b"data"), batch.get(label_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        raise DataError("data.source", f"{path}: b'data' must be a uint8 (N, 3072) array, got {shape}")
    try:
        y = np.asarray(labels if labels is not None else [], dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise DataError("data.source", f"{path}: {label_key!r} is not a list of integers") from exc
    if y.ndim != 1 or len(y) != len(data):
        raise DataError("data.source", f"{path}: {label_key!r} holds {y.size} labels for {len(data)} images")
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise DataError("data.source", f"{path}: labels outside 0..{num_classes - 1}")
    return (data.reshape(-1, 3, 32, 32) / np.float32(255)), y


def load_cifar(spec: CifarData, data_dir: Path | None) -> Dataset:
    """data_dir/cifar-10-batches-py/ (data_batch_1..5, test_batch) or data_dir/cifar-100-python/ (train,
    test), with the files' own test split."""
    if data_dir is None:
        raise DataError("data.source", f"{spec.source} needs a data directory (none configured)")
    if spec.test_fraction > 0:
        raise DataError(
            "data.test_fraction", f"{spec.source} carries its own test split; leave test_fraction at 0"
        )
    folder, train_names, test_name, label_key, num_classes = CIFAR_LAYOUT[spec.source]
    directory = Path(data_dir) / folder
    source_files(spec, data_dir)  # DataError naming the first missing file
    parts = [batch_arrays(directory / name, label_key, num_classes) for name in train_names]
    X_test, y_test = batch_arrays(directory / test_name, label_key, num_classes)
    return build_dataset(
        np.concatenate([X for X, _ in parts]),
        np.concatenate([y for _, y in parts]),
        spec,
        task="classification",
        num_classes=num_classes,
        X_test=X_test,
        y_test=y_test,
    )
