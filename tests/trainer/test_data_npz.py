"""Untrusted .npz files: good ones described and loaded, every bad one refused naming its key."""

import io
import zipfile

import numpy as np
import pytest
import torch

from trainer.data import DataError, inspect_npz, load_data
from trainer.spec import DatasetRef, NpzData

CAPS = {"max_bytes": 64 << 20, "max_uncompressed_bytes": 64 << 20}
rng = np.random.default_rng(0)


def save(tmp_path, compressed=False, **arrays):
    path = tmp_path / "data.npz"
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path


def npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def refused(path, field, match, **caps):
    with pytest.raises(DataError, match=match) as info:
        inspect_npz(path, **{**CAPS, **caps})
    assert info.value.field == field, str(info.value)
    return info.value


def test_good_classification_file_is_described(tmp_path):
    y = np.array([0, 1, 2, 4] * 10)
    path = save(tmp_path, X=rng.normal(size=(40, 6)).astype(np.float32), y=y,
                X_test=rng.normal(size=(8, 6)), y_test=np.array([0, 1] * 4))
    info = inspect_npz(path, **CAPS)
    assert info.keys == ("X", "y", "X_test", "y_test")
    assert (info.n_train, info.n_test, info.input_shape) == (40, 8, (6,))
    assert (info.task, info.num_classes, info.output_dim) == ("classification", 5, 5)
    assert info.uncompressed_bytes > 40 * 6 * 4


def test_good_regression_file_with_images_is_described_and_loaded(tmp_path):
    path = save(tmp_path, compressed=True, X=rng.normal(size=(30, 2, 5, 5)), y=rng.normal(size=30))
    info = inspect_npz(path, **CAPS)
    assert (info.n_train, info.n_test, info.input_shape) == (30, 0, (2, 5, 5))
    assert (info.task, info.num_classes, info.output_dim) == ("regression", None, 1)
    ds = load_data(NpzData(source="npz", path=str(path), test_fraction=0.2))
    assert (ds.n_train, ds.n_test) == (24, 6) and ds.y_train.shape == (24, 1)
    assert ds.y_train.dtype == torch.float32 and ds.X_train.shape[1:] == (2, 5, 5)


def test_two_dimensional_integer_targets_are_regression(tmp_path):
    path = save(tmp_path, X=rng.normal(size=(10, 3)), y=np.eye(10, 3, dtype=np.int64))
    assert (inspect_npz(path, **CAPS).task, inspect_npz(path, **CAPS).output_dim) == ("regression", 3)


def test_uploaded_dataset_loads_from_the_path_the_worker_passes(tmp_path):
    path = save(tmp_path, X=rng.normal(size=(20, 3)), y=np.arange(20) % 2)
    ds = load_data(DatasetRef(source="dataset", id="ds_1", test_fraction=0.5), dataset_path=path)
    assert (ds.n_train, ds.n_test, ds.num_classes) == (10, 10, 2)
    with pytest.raises(DataError) as info:
        load_data(DatasetRef(source="dataset", id="ds_1"))
    assert info.value.field == "data.id"


def test_missing_npz_path_names_data_path(tmp_path):
    with pytest.raises(DataError) as info:
        load_data(NpzData(source="npz", path=str(tmp_path / "nope.npz")))
    assert info.value.field == "data.path"


def test_object_array_is_refused_without_unpickling(tmp_path):
    X = np.empty(4, dtype=object)
    X[:] = [{"a": 1}, [2], "3", None]
    refused(save(tmp_path, X=X, y=np.arange(4)), "X", "object arrays are refused")


def test_string_array_is_refused_as_non_numeric(tmp_path):
    refused(save(tmp_path, X=np.array([["a", "b"]] * 3), y=np.arange(3)), "X", "not numeric")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_are_refused_naming_the_key(tmp_path, bad):
    X = rng.normal(size=(5, 2))
    X[3, 1] = bad
    refused(save(tmp_path, X=X, y=np.arange(5)), "X", "NaN or Inf")
    y_test = np.array([0.0, bad])
    refused(save(tmp_path, X=np.zeros((5, 2)), y=rng.normal(size=5), X_test=np.zeros((2, 2)), y_test=y_test),
            "y_test", "NaN or Inf")


def test_mismatched_lengths_are_refused(tmp_path):
    refused(save(tmp_path, X=np.zeros((5, 2)), y=np.arange(4)), "y", "4 targets for 5 samples")
    refused(save(tmp_path, X=np.zeros((5, 2)), y=np.arange(5), X_test=np.zeros((3, 2)), y_test=np.arange(2)),
            "y_test", "2 targets for 3 samples")


def test_unknown_key_is_refused(tmp_path):
    refused(save(tmp_path, X=np.zeros((5, 2)), y=np.arange(5), labels=np.arange(5)), "labels", "unknown key")


def test_missing_keys_are_named(tmp_path):
    refused(save(tmp_path, X=np.zeros((5, 2))), "y", "missing")
    refused(save(tmp_path, X=np.zeros((5, 2)), y=np.arange(5), X_test=np.zeros((2, 2))), "y_test", "missing")


@pytest.mark.parametrize(
    ("arrays", "field", "match"),
    [
        ({"X": np.zeros((5, 2, 2)), "y": np.arange(5)}, "X", "must be"),
        ({"X": np.zeros((0, 2)), "y": np.arange(0)}, "X", "empty"),
        ({"X": np.zeros((5, 2)), "y": np.array([0, 1, -1, 0, 1])}, "y", "non-negative"),
        ({"X": np.zeros((5, 2)), "y": np.array([0, 1, 10_000, 0, 1])}, "y", "classes exceeds"),
        ({"X": np.zeros((5, 2)), "y": np.zeros((5, 1, 1))}, "y", r"\(n,\) or \(n, k\)"),
        ({"X": np.zeros((5, 2)), "y": np.arange(5), "X_test": np.zeros((2, 3)), "y_test": np.arange(2)},
         "X_test", "sample shape"),
        ({"X": np.zeros((5, 2)), "y": np.arange(5), "X_test": np.zeros((2, 2)), "y_test": np.zeros(2)},
         "y_test", "classification targets like y"),
        ({"X": np.zeros((5, 2)), "y": np.array([True] * 5)}, "y", "not allowed"),
        ({"X": np.zeros((5, 2), dtype=np.complex64), "y": np.arange(5)}, "X", "not numeric"),
    ],
)
def test_malformed_arrays_are_refused_naming_the_key(tmp_path, arrays, field, match):
    refused(save(tmp_path, **arrays), field, match)


def test_highly_compressible_member_is_refused_as_a_zip_bomb(tmp_path):
    # 8 MiB of zeros deflates about 1000:1, far past any real data set.
    path = save(tmp_path, compressed=True, X=np.zeros((1024, 1024)), y=np.arange(1024))
    refused(path, "X", "compression ratio", max_uncompressed_bytes=1 << 30)


def test_total_uncompressed_size_over_the_cap_is_refused(tmp_path):
    path = save(tmp_path, X=rng.normal(size=(4096, 64)), y=np.arange(4096))
    refused(path, "file", "exceeds the limit", max_uncompressed_bytes=1 << 20)


def test_file_over_the_byte_cap_is_refused(tmp_path):
    path = save(tmp_path, X=rng.normal(size=(100, 10)), y=np.arange(100))
    refused(path, "file", "exceeds the limit", max_bytes=1000)


def test_member_claiming_a_huge_size_is_refused_before_reading(tmp_path):
    path = tmp_path / "data.npz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("X.npy", npy_bytes(np.zeros((4, 2))))
        zf.writestr("y.npy", npy_bytes(np.arange(4)))
        zf.filelist[0].file_size = 50 << 30  # the central directory now claims 50 GiB
    refused(path, "X", "compression ratio", max_uncompressed_bytes=1 << 40)


def test_member_holding_more_than_it_claims_is_refused(tmp_path):
    path = tmp_path / "data.npz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("X.npy", npy_bytes(np.zeros((1000, 100))))
        zf.writestr("y.npy", npy_bytes(np.arange(1000)))
        zf.filelist[0].file_size = 1000  # claims 1 kB, holds 800 kB: reads stop at the claim
    refused(path, "X", "does not match|Bad CRC")


def test_npy_header_claiming_a_huge_shape_is_refused_before_allocation(tmp_path):
    header = io.BytesIO()
    claim = {"descr": "<f8", "fortran_order": False, "shape": (10**9, 1000)}  # 8 TB
    np.lib.format.write_array_header_1_0(header, claim)
    path = tmp_path / "data.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("X.npy", header.getvalue() + bytes(64))
        zf.writestr("y.npy", npy_bytes(np.arange(4)))
    refused(path, "X", "does not match")


def test_garbage_files_are_refused(tmp_path):
    path = tmp_path / "data.npz"
    path.write_bytes(b"PK\x03\x04 definitely not a zip")
    refused(path, "file", "not a valid")
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("X.npy", b"\x93NUMPY\x01\x00\x08\x00{garbage")
        zf.writestr("y.npy", npy_bytes(np.arange(4)))
    refused(path, "X", "not a valid .npy")
