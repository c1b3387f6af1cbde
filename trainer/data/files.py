"""Where the file-backed built-in sources live under the data directory (no torch: the service hashes them)."""

from __future__ import annotations

from pathlib import Path

from trainer.data.errors import DataError
from trainer.spec import CifarData, MnistData

MNIST_DIR = "mnist"
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# source: (directory, training batches, test batch, label key, classes)
CIFAR_LAYOUT = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", b"labels", 10),
    "cifar100": ("cifar-100-python", ["train"], "test", b"fine_labels", 100),
}


def find_idx(directory: Path, stem: str) -> Path:
    """The raw file if present, else its .gz; DataError naming the missing path otherwise."""
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError("data.source", f"mnist: missing {directory / stem} (or {stem}.gz)")


def source_files(data: MnistData | CifarData, data_dir: Path) -> list[Path]:
    """Every file the source is read from, in a fixed order; DataError when one is missing."""
    if isinstance(data, MnistData):
        return [find_idx(Path(data_dir) / MNIST_DIR, stem) for stem in MNIST_FILES.values()]
    directory, train, test, _, _ = CIFAR_LAYOUT[data.source]
    paths = [Path(data_dir) / directory / name for name in [*train, test]]
    for path in paths:
        if not path.is_file():
            raise DataError("data.source", f"{data.source}: missing {path}")
    return paths
