"""The trainer's data layer: specs in, validated tensors out (no HTTP, no SQL).

    load_data(spec, data_dir=None, dataset_path=None) -> Dataset
    standardize(X, mean, std)            # re-applied at predict time with Dataset.x_mean / x_std
    inspect_npz(path, max_bytes=..., max_uncompressed_bytes=...) -> NpzInfo   # uploads
    augment_batch(X, generator)          # CIFAR pad-4 crop + h-flip
    DataError(field, reason)             # str(e) == "field: reason"
"""

from trainer.data.augment import augment_batch
from trainer.data.dataset import Dataset, standardize
from trainer.data.errors import DataError
from trainer.data.load import load_data
from trainer.data.npz import NpzInfo, inspect_npz

__all__ = ["DataError", "Dataset", "NpzInfo", "augment_batch", "inspect_npz", "load_data", "standardize"]
