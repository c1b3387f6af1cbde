"""load_data: one entry point from a data spec to a Dataset."""

from __future__ import annotations

from pathlib import Path

from trainer.data.builtin import load_digits_data, load_mnist5k
from trainer.data.cifar import load_cifar
from trainer.data.dataset import Dataset
from trainer.data.errors import DataError
from trainer.data.idx import load_mnist
from trainer.data.prepare import load_npz
from trainer.data.synthetic import load_synthetic
from trainer.spec import (
    CifarData,
    DatasetRef,
    DataSpec,
    DigitsData,
    Mnist5kData,
    MnistData,
    NpzData,
    SyntheticData,
)


def load_data(spec: DataSpec, *, data_dir: Path | None = None, dataset_path: Path | None = None) -> Dataset:
    """Load the data a spec names. data_dir holds mnist/ and cifar-*/; dataset_path is an uploaded
    dataset's file, resolved by the worker. Raises DataError naming the field at fault."""
    match spec:
        case SyntheticData():
            return load_synthetic(spec)
        case DigitsData():
            return load_digits_data(spec)
        case Mnist5kData():
            return load_mnist5k(spec)
        case MnistData():
            return load_mnist(spec, data_dir)
        case CifarData():
            return load_cifar(spec, data_dir)
        case NpzData():
            path = Path(spec.path)
            if not path.is_file():
                raise DataError("data.path", f"no such file: {path}")
            return load_npz(path, spec)
        case DatasetRef():
            if dataset_path is None:
                raise DataError("data.id", f"dataset {spec.id} has no file here (no dataset_path given)")
            if not Path(dataset_path).is_file():
                raise DataError("data.id", f"dataset {spec.id}: file missing at {dataset_path}")
            return load_npz(Path(dataset_path), spec)
    raise DataError("data.source", f"unknown data source {type(spec).__name__}")
