"""The trainer's data layer: specs in, validated tensors out (no HTTP, no SQL).

    load_data(spec, data_dir=None, dataset_path=None) -> Dataset
    standardize(X, mean, std)            # re-applied at predict time with Dataset.x_mean / x_std
    inspect_npz(path, max_bytes=..., max_uncompressed_bytes=...) -> NpzInfo   # uploads
    augment_batch(X, generator)          # CIFAR pad-4 crop + h-flip
    DataError(field, reason)             # str(e) == "field: reason"

`inspect_npz`, `NpzInfo` and `DataError` need only numpy: the API validates uploads with them and must not
import torch on a request path. The rest is imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from trainer.data.errors import DataError
from trainer.data.npz import NpzInfo, inspect_npz

if TYPE_CHECKING:
    from trainer.data.augment import augment_batch
    from trainer.data.dataset import Dataset, standardize
    from trainer.data.load import load_data

_LAZY = {"augment_batch": "trainer.data.augment", "Dataset": "trainer.data.dataset",
         "standardize": "trainer.data.dataset", "load_data": "trainer.data.load"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'trainer.data' has no attribute {name!r}")


__all__ = ["DataError", "Dataset", "NpzInfo", "augment_batch", "inspect_npz", "load_data", "standardize"]
