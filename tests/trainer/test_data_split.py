"""Split, limit, random labels and standardization, on the built-in image sets and on crafted .npz files."""

import numpy as np
import pytest
import torch

from trainer.data import DataError, Dataset, load_data, standardize
from trainer.spec import DigitsData, Mnist5kData, NpzData


def npz_spec(tmp_path, arrays, **kw) -> NpzData:
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return NpzData(source="npz", path=str(path), **kw)


def test_digits_shapes_classes_and_stratified_split():
    ds = load_data(DigitsData(source="digits", test_fraction=0.2, seed=1))
    assert ds.input_shape == (1, 8, 8) and ds.X_train.dtype == torch.float32
    assert (ds.task, ds.num_classes, ds.output_dim) == ("classification", 10, 10)
    assert ds.n_train + ds.n_test == 1797 and ds.n_test == round(0.2 * 1797)
    assert ds.y_train.dtype == torch.int64
    # Stratified: every class keeps its share of the test set to within one sample.
    all_counts = torch.bincount(torch.cat([ds.y_train, ds.y_test]), minlength=10).double()
    test_counts = torch.bincount(ds.y_test, minlength=10).double()
    assert (test_counts - 0.2 * all_counts).abs().max() <= 1


def test_mnist5k_shapes_classes_and_pixel_scale():
    ds = load_data(Mnist5kData(source="mnist5k", standardize=False, test_fraction=0.1))
    assert ds.input_shape == (1, 28, 28) and (ds.n_train, ds.n_test) == (4500, 500)
    assert ds.num_classes == 10
    assert torch.equal(torch.bincount(ds.y_test), torch.full((10,), 50))  # 500 per class, stratified
    assert ds.X_train.min() == 0 and ds.X_train.max() == 1  # scaled /255
    assert ds.x_mean.tolist() == [[[0.0]]] and ds.x_std.tolist() == [[[1.0]]]


def test_split_is_deterministic_for_a_seed_and_differs_across_seeds():
    a, b = load_data(DigitsData(source="digits", seed=5)), load_data(DigitsData(source="digits", seed=5))
    c = load_data(DigitsData(source="digits", seed=6))
    assert torch.equal(a.X_train, b.X_train) and torch.equal(a.y_test, b.y_test)
    assert a.X_train.shape == c.X_train.shape and not torch.equal(a.X_train, c.X_train)


def test_limit_subsamples_before_the_split():
    ds = load_data(DigitsData(source="digits", limit=100, test_fraction=0.25, seed=2))
    assert (ds.n_train, ds.n_test) == (75, 25)
    again = load_data(DigitsData(source="digits", limit=100, test_fraction=0.25, seed=2))
    assert torch.equal(ds.X_test, again.X_test)


def test_zero_test_fraction_gives_an_empty_test_set_of_the_right_shape():
    ds = load_data(DigitsData(source="digits", test_fraction=0.0, limit=40))
    assert ds.n_train == 40 and ds.X_test.shape == (0, 1, 8, 8) and ds.y_test.shape == (0,)


def test_random_labels_changes_training_labels_only_and_keeps_the_multiset():
    plain = load_data(Mnist5kData(source="mnist5k", limit=600, seed=4))
    shuffled = load_data(Mnist5kData(source="mnist5k", limit=600, seed=4, random_labels=True))
    assert torch.equal(plain.X_train, shuffled.X_train) and torch.equal(plain.X_test, shuffled.X_test)
    assert torch.equal(plain.y_test, shuffled.y_test)
    assert torch.equal(plain.y_train.sort().values, shuffled.y_train.sort().values)
    assert (plain.y_train != shuffled.y_train).float().mean() > 0.5


def test_standardization_stats_come_from_the_training_split_only(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(5.0, 2.0, size=(300, 4))
    X_test = rng.normal(100.0, 30.0, size=(50, 4))  # very unlike training data
    y, y_test = rng.normal(size=300), rng.normal(size=50)
    ds = load_data(npz_spec(tmp_path, {"X": X, "y": y, "X_test": X_test, "y_test": y_test}))
    torch.testing.assert_close(ds.x_mean, torch.tensor(X.mean(0), dtype=torch.float32))
    torch.testing.assert_close(ds.x_std, torch.tensor(X.std(0), dtype=torch.float32))
    torch.testing.assert_close(ds.X_train.mean(0), torch.zeros(4, dtype=torch.float32), atol=1e-5, rtol=0)
    assert (ds.X_test.mean(0) > 20).all()  # test data standardized with the training stats
    # Predict time: the stored stats reproduce the loader's transform on raw inputs.
    raw = torch.tensor(X_test, dtype=torch.float32)
    torch.testing.assert_close(standardize(raw, ds.x_mean, ds.x_std), ds.X_test)


def test_standardization_after_a_split_uses_only_the_training_rows(tmp_path):
    rng = np.random.default_rng(1)
    X = np.concatenate([rng.normal(0, 1, (90, 3)), rng.normal(50, 1, (10, 3))])
    ds = load_data(npz_spec(tmp_path, {"X": X, "y": rng.normal(size=100)}, test_fraction=0.3, seed=0))
    raw_train = ds.X_train.double() * ds.x_std.double() + ds.x_mean.double()
    torch.testing.assert_close(raw_train.mean(0), ds.x_mean.double(), atol=1e-4, rtol=0)
    raw_test = ds.X_test.double() * ds.x_std.double() + ds.x_mean.double()
    full_mean = torch.cat([raw_train, raw_test]).mean(0)
    assert (full_mean - ds.x_mean.double()).abs().max() > 0.1  # the test rows did not leak in


def test_image_standardization_is_per_channel(tmp_path):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(40, 3, 4, 4)) * np.array([1.0, 10.0, 0.1])[None, :, None, None]
    X += np.array([0.0, 5.0, -3.0])[None, :, None, None]
    ds = load_data(npz_spec(tmp_path, {"X": X, "y": rng.integers(0, 3, 40)}, test_fraction=0.0))
    assert ds.x_mean.shape == (3, 1, 1) and ds.x_std.shape == (3, 1, 1)
    torch.testing.assert_close(ds.x_mean.flatten(), torch.tensor(X.mean((0, 2, 3)), dtype=torch.float32))
    channel_std = ds.X_train.std((0, 2, 3), correction=0)
    torch.testing.assert_close(channel_std, torch.ones(3, dtype=torch.float32), atol=1e-4, rtol=0)


def test_constant_feature_gets_unit_std_instead_of_dividing_by_zero(tmp_path):
    X = np.stack([np.arange(20.0), np.full(20, 7.0)], axis=1)
    ds = load_data(npz_spec(tmp_path, {"X": X, "y": np.arange(20.0)}, test_fraction=0.0))
    assert ds.x_std[1] == 1 and torch.isfinite(ds.X_train).all()
    assert torch.equal(ds.X_train[:, 1], torch.zeros(20, dtype=torch.float32))


def test_given_test_set_ignores_test_fraction_and_limit_keeps_the_ratio(tmp_path):
    rng = np.random.default_rng(3)
    arrays = {"X": rng.normal(size=(80, 2)), "y": rng.normal(size=80),
              "X_test": rng.normal(size=(20, 2)), "y_test": rng.normal(size=20)}
    assert load_data(npz_spec(tmp_path, arrays, test_fraction=0.5)).n_test == 20
    limited = load_data(npz_spec(tmp_path, arrays, limit=50))
    assert (limited.n_train, limited.n_test) == (40, 10)


def test_dataset_rejects_tensors_that_break_its_invariants():
    X, y = torch.zeros(4, 2, dtype=torch.float32), torch.zeros(4, dtype=torch.int64)
    ok = dict(X_train=X, y_train=y, X_test=X[:0], y_test=y[:0], task="classification", num_classes=2,
              x_mean=torch.zeros(2, dtype=torch.float32), x_std=torch.ones(2, dtype=torch.float32))
    assert Dataset(**ok).n_train == 4
    with pytest.raises(ValueError, match="y_train"):
        Dataset(**{**ok, "y_train": y.float()})
    with pytest.raises(ValueError, match="X_train"):
        Dataset(**{**ok, "X_train": X.double()})
    with pytest.raises(ValueError, match="num_classes"):
        Dataset(**{**ok, "num_classes": None})


def test_data_error_names_the_field_and_survives_pickling():
    import pickle

    err = DataError("X", "contains NaN or Inf")
    assert str(err) == "X: contains NaN or Inf" and (err.field, err.reason) == ("X", "contains NaN or Inf")
    assert isinstance(err, ValueError)
    again = pickle.loads(pickle.dumps(err))
    assert (type(again), again.field, again.reason) == (DataError, "X", "contains NaN or Inf")
