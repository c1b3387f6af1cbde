"""CIFAR python batches: the test pickles them in the real layout; anything but plain data is refused."""

import os
import pickle

import numpy as np
import pytest
import torch

from tests.cifar_files import make_cifar10, write_batch
from trainer.data import DataError, load_data
from trainer.data.cifar import read_batch
from trainer.spec import CifarData


@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar10_reads_the_python_batches(tmp_path, protocol):
    batches = make_cifar10(tmp_path, protocol)
    ds = load_data(CifarData(source="cifar10", standardize=False), data_dir=tmp_path)
    assert ds.X_train.shape == (15, 3, 32, 32) and ds.X_test.shape == (3, 3, 32, 32)
    assert (ds.task, ds.num_classes) == ("classification", 10)
    first = batches["data_batch_1"][b"data"][0]
    # Row layout: 1024 red, then 1024 green, then 1024 blue values, each plane row-major.
    green = torch.tensor(first[1024:2048].reshape(32, 32) / 255.0, dtype=torch.float32)
    torch.testing.assert_close(ds.X_train[0, 1], green)
    train_labels = [int(v) for i in range(1, 6) for v in batches[f"data_batch_{i}"][b"labels"]]
    assert ds.y_train.tolist() == train_labels
    assert ds.y_test.tolist() == [int(v) for v in batches["test_batch"][b"labels"]]


def test_cifar100_reads_fine_labels(tmp_path):
    directory = tmp_path / "cifar-100-python"
    directory.mkdir()
    train = write_batch(directory / "train", 7, b"fine_labels", 100, seed=1)
    write_batch(directory / "test", 4, b"fine_labels", 100, seed=2)
    ds = load_data(CifarData(source="cifar100"), data_dir=tmp_path)
    assert ds.X_train.shape == (7, 3, 32, 32) and ds.n_test == 4 and ds.num_classes == 100
    assert ds.y_train.tolist() == train[b"fine_labels"].tolist()
    assert ds.x_mean.shape == (3, 1, 1)


class RunsAShellCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_with_a_forbidden_global_is_refused_without_executing(tmp_path):
    make_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    batch = {b"data": RunsAShellCommand(marker), b"labels": [0]}
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(DataError, match=r"system is not allowed") as info:
        load_data(CifarData(source="cifar10"), data_dir=tmp_path)
    assert info.value.field == "data.source" and "data_batch_3" in info.value.reason
    assert not marker.exists()


def test_codecs_encode_is_admitted_only_for_latin1(tmp_path):
    path = tmp_path / "batch"
    path.write_bytes(b"c_codecs\nencode\n(Vabc\nVrot13\ntR.")  # protocol 0: _codecs.encode("abc", "rot13")
    with pytest.raises(DataError, match="not allowed"):
        read_batch(path)
    path.write_bytes(b"c_codecs\nencode\n(Vabc\nVlatin1\ntR.")
    # latin1 passes find_class and decodes; the result is then refused only for not being a batch dict.
    with pytest.raises(DataError, match="expected a dict, got bytes"):
        read_batch(path)


@pytest.mark.parametrize("payload", [b"cbuiltins\neval\n(V1+1\ntR.", b"not a pickle", b"\x80\x02]q\x00."])
def test_other_globals_garbage_and_non_dicts_are_refused(tmp_path, payload):
    path = tmp_path / "batch"
    path.write_bytes(payload)
    with pytest.raises(DataError) as info:
        read_batch(path)
    assert info.value.field == "data.source" and str(path) in info.value.reason


def test_cifar_batch_with_wrong_layout_is_refused(tmp_path):
    make_cifar10(tmp_path)
    bad = {b"data": np.zeros((3, 1024), np.uint8), b"labels": [0, 1, 2]}
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(DataError, match="3072"):
        load_data(CifarData(source="cifar10"), data_dir=tmp_path)


def test_cifar_labels_out_of_range_are_refused(tmp_path):
    make_cifar10(tmp_path)
    bad = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}
    (tmp_path / "cifar-10-batches-py" / "data_batch_5").write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(DataError, match="outside 0..9"):
        load_data(CifarData(source="cifar10"), data_dir=tmp_path)


def test_cifar_names_the_missing_batch(tmp_path):
    make_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(DataError, match="data_batch_4") as info:
        load_data(CifarData(source="cifar10"), data_dir=tmp_path)
    assert info.value.field == "data.source"
    with pytest.raises(DataError, match="cifar-100-python"):
        load_data(CifarData(source="cifar100"), data_dir=tmp_path)
    with pytest.raises(DataError, match="data directory"):
        load_data(CifarData(source="cifar10"))
