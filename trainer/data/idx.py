"""MNIST in its IDX files, parsed here with numpy and checked byte for byte.

IDX layout: two zero bytes, a dtype code, the number of dims, then one big-endian uint32 per dim,
then the values in C order, big-endian.
"""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np

from trainer.data.dataset import Dataset
from trainer.data.errors import DataError
from trainer.data.files import MNIST_DIR, MNIST_FILES, find_idx
from trainer.data.prepare import build_dataset
from trainer.spec import MnistData

IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
MAX_IDX_BYTES = 1 << 31  # MNIST is 47 MB; a decompressed file past 2 GiB is not MNIST


def _read_bytes(path: Path) -> bytes:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read(MAX_IDX_BYTES + 1)
    except (OSError, EOFError) as exc:  # gzip raises these for corrupt or truncated archives
        raise DataError("data.source", f"{path}: cannot read: {exc}") from exc
    if len(raw) > MAX_IDX_BYTES:
        raise DataError("data.source", f"{path}: larger than {MAX_IDX_BYTES} bytes")
    return raw


def parse_idx(raw: bytes, name: str) -> np.ndarray:
    """Decode IDX bytes into a native-endian array; DataError (naming `name`) on any inconsistency."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError("data.source", f"{name}: wrong magic number (not an IDX file)")
    code, ndim = raw[2], raw[3]
    if code not in IDX_DTYPES:
        raise DataError("data.source", f"{name}: unknown IDX dtype code 0x{code:02x}")
    if ndim == 0:
        raise DataError("data.source", f"{name}: IDX file with 0 dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError("data.source", f"{name}: truncated header")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(IDX_DTYPES[code])
    want = math.prod(dims) * dtype.itemsize
    held = len(raw) - header
    if held != want:
        state = "truncated" if held < want else "has trailing bytes"
        raise DataError("data.source", f"{name}: {state}: header says {dims} ({want} bytes), file has {held}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (raw, or gzip-compressed when its name ends in .gz)."""
    return parse_idx(_read_bytes(path), str(path))


def read_mnist_pair(directory: Path, images_stem: str, labels_stem: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = read_idx(find_idx(directory, images_stem)), read_idx(find_idx(directory, labels_stem))
    if images.ndim != 3 or images.dtype != np.uint8:
        got = f"{images.dtype} {images.shape}"
        raise DataError("data.source", f"{images_stem}: expected uint8 (n, rows, cols), got {got}")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        got = f"{labels.dtype} {labels.shape}"
        raise DataError("data.source", f"{labels_stem}: expected uint8 (n,), got {got}")
    if len(images) != len(labels):
        raise DataError("data.source", f"{labels_stem}: {len(labels)} labels for {len(images)} images")
    if len(labels) and labels.max() > 9:
        raise DataError("data.source", f"{labels_stem}: label {labels.max()} outside 0..9")
    return images, labels


def load_mnist(spec: MnistData, data_dir: Path | None) -> Dataset:
    """data_dir/mnist/ IDX files -> (n, 1, 28, 28) scaled /255, with the files' own test split."""
    if data_dir is None:
        raise DataError("data.source", "mnist needs a data directory (none configured)")
    if spec.test_fraction > 0:
        raise DataError("data.test_fraction", "mnist carries its own test split; leave test_fraction at 0")
    directory = Path(data_dir) / MNIST_DIR
    if not directory.is_dir():
        raise DataError("data.source", f"mnist: missing directory {directory}")
    X, y = read_mnist_pair(directory, MNIST_FILES["train_images"], MNIST_FILES["train_labels"])
    X_test, y_test = read_mnist_pair(directory, MNIST_FILES["test_images"], MNIST_FILES["test_labels"])
    if X.shape[1:] != X_test.shape[1:]:
        shapes = f"train images {X.shape[1:]} and test images {X_test.shape[1:]}"
        raise DataError("data.source", f"mnist: {shapes} differ")
    return build_dataset(
        (X / np.float32(255)).reshape(len(X), 1, *X.shape[1:]),
        y,
        spec,
        task="classification",
        num_classes=10,
        X_test=(X_test / np.float32(255)).reshape(len(X_test), 1, *X_test.shape[1:]),
        y_test=y_test,
    )
