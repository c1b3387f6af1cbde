"""MNIST IDX files: the test writes them byte for byte in the IDX format, raw and gzipped."""

import gzip
import struct

import numpy as np
import pytest
import torch

from trainer.data import DataError, load_data
from trainer.data.idx import read_idx
from trainer.spec import MnistData

CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int16): 0x0B,
         np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E}


def idx_bytes(a: np.ndarray) -> bytes:
    """The IDX layout: 0, 0, dtype code, ndim, then big-endian uint32 dims, then big-endian values."""
    header = struct.pack(">BBBB", 0, 0, CODES[a.dtype], a.ndim) + struct.pack(f">{a.ndim}I", *a.shape)
    return header + a.astype(a.dtype.newbyteorder(">")).tobytes()


def write_idx(path, a: np.ndarray, *, gz: bool = False):
    data = idx_bytes(a)
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("dtype", list(CODES))
@pytest.mark.parametrize("gz", [False, True])
def test_idx_reader_round_trips_every_dtype_raw_and_gzipped(tmp_path, dtype, gz):
    a = (np.arange(2 * 3 * 5) - 7).reshape(2, 3, 5).astype(dtype)
    got = read_idx(write_idx(tmp_path / "a-idx3", a, gz=gz))
    assert got.dtype == dtype.newbyteorder("=") and got.shape == (2, 3, 5)
    np.testing.assert_array_equal(got, a)


def test_idx_reader_rejects_a_truncated_file(tmp_path):
    path = tmp_path / "imgs"
    path.write_bytes(idx_bytes(np.zeros((4, 3, 3), np.uint8))[:-5])
    with pytest.raises(DataError, match="truncated") as info:
        read_idx(path)
    assert info.value.field == "data.source" and str(path) in info.value.reason


def test_idx_reader_rejects_a_truncated_header(tmp_path):
    path = tmp_path / "imgs"
    path.write_bytes(idx_bytes(np.zeros((4, 3, 3), np.uint8))[:9])
    with pytest.raises(DataError, match="truncated header"):
        read_idx(path)


def test_idx_reader_rejects_trailing_bytes(tmp_path):
    path = tmp_path / "imgs"
    path.write_bytes(idx_bytes(np.zeros((4,), np.uint8)) + b"\0")
    with pytest.raises(DataError, match="trailing"):
        read_idx(path)


@pytest.mark.parametrize("first", [b"\x01\x00\x08\x01", b"\x00\x00\x07\x01", b"\x1f\x8b\x08\x00"])
def test_idx_reader_rejects_a_wrong_magic_number(tmp_path, first):
    path = tmp_path / "imgs"
    path.write_bytes(first + idx_bytes(np.zeros((4,), np.uint8))[4:])
    with pytest.raises(DataError, match="magic|dtype code"):
        read_idx(path)


def test_idx_reader_rejects_a_corrupt_gzip(tmp_path):
    path = tmp_path / "imgs.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((400,), np.uint8)))[:-10])
    with pytest.raises(DataError, match="cannot read"):
        read_idx(path)


def make_mnist_dir(root, n_train=12, n_test=5, gz=()):
    """A tiny MNIST directory in the standard layout; `gz` names the stems to store gzipped."""
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    (root / "mnist").mkdir()
    for stem, a in arrays.items():
        write_idx(root / "mnist" / stem, a, gz=stem in gz)
    return arrays


def test_mnist_loads_idx_files_with_their_own_test_split(tmp_path):
    arrays = make_mnist_dir(tmp_path, gz=("train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"))
    ds = load_data(MnistData(source="mnist", standardize=False), data_dir=tmp_path)
    assert ds.X_train.shape == (12, 1, 28, 28) and ds.X_test.shape == (5, 1, 28, 28)
    assert ds.num_classes == 10 and ds.task == "classification"
    expected = torch.tensor(arrays["train-images-idx3-ubyte"] / 255.0, dtype=torch.float32)
    torch.testing.assert_close(ds.X_train[:, 0], expected)
    assert ds.y_train.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert ds.y_test.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()


def test_mnist_limit_subsamples_train_and_test_together(tmp_path):
    make_mnist_dir(tmp_path, n_train=40, n_test=10)
    ds = load_data(MnistData(source="mnist", limit=20), data_dir=tmp_path)
    assert (ds.n_train, ds.n_test) == (16, 4)


def test_mnist_without_data_dir_names_data_source():
    with pytest.raises(DataError) as info:
        load_data(MnistData(source="mnist"))
    assert info.value.field == "data.source"


def test_mnist_names_the_missing_file(tmp_path):
    make_mnist_dir(tmp_path)
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte") as info:
        load_data(MnistData(source="mnist"), data_dir=tmp_path)
    assert info.value.field == "data.source"


def test_mnist_rejects_a_label_count_mismatch(tmp_path):
    make_mnist_dir(tmp_path)
    write_idx(tmp_path / "mnist" / "train-labels-idx1-ubyte", np.zeros(11, np.uint8))
    with pytest.raises(DataError, match="11 labels for 12 images"):
        load_data(MnistData(source="mnist"), data_dir=tmp_path)


def test_mnist_rejects_labels_outside_0_to_9(tmp_path):
    make_mnist_dir(tmp_path)
    write_idx(tmp_path / "mnist" / "t10k-labels-idx1-ubyte", np.full(5, 10, np.uint8))
    with pytest.raises(DataError, match="outside 0..9"):
        load_data(MnistData(source="mnist"), data_dir=tmp_path)


def test_mnist_refuses_a_test_fraction_because_the_files_carry_a_test_split(tmp_path):
    make_mnist_dir(tmp_path)
    with pytest.raises(DataError) as info:
        load_data(MnistData(source="mnist", test_fraction=0.2), data_dir=tmp_path)
    assert info.value.field == "data.test_fraction"
