"""The paper's synthetic recipe: unit-norm Gaussian inputs, deterministic per seed."""

import torch

from trainer.data import load_data
from trainer.spec import SyntheticData


def synthetic(**kw) -> SyntheticData:
    return SyntheticData(source="synthetic", **{"n": 50, "d": 7, "n_test": 20, **kw})


def test_synthetic_is_deterministic_for_a_seed():
    a, b = load_data(synthetic(seed=3)), load_data(synthetic(seed=3))
    for name in ("X_train", "y_train", "X_test", "y_test"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_synthetic_differs_across_seeds():
    a, b = load_data(synthetic(seed=3)), load_data(synthetic(seed=4))
    assert not torch.allclose(a.X_train, b.X_train)
    assert not torch.allclose(a.y_train, b.y_train)


def test_synthetic_rows_have_unit_norm_in_train_and_test():
    ds = load_data(synthetic())
    ones = torch.ones(50, dtype=torch.float32)
    torch.testing.assert_close(ds.X_train.norm(dim=1), ones, rtol=0, atol=1e-6)
    torch.testing.assert_close(ds.X_test.norm(dim=1), ones[:20], rtol=0, atol=1e-6)


def test_synthetic_shapes_dtypes_and_no_standardization():
    ds = load_data(synthetic(labels="teacher"))
    assert ds.X_train.shape == (50, 7) and ds.X_test.shape == (20, 7)
    assert ds.y_train.shape == (50, 1) and ds.y_test.shape == (20, 1)
    assert ds.X_train.dtype == ds.y_train.dtype == torch.float32
    assert (ds.task, ds.num_classes, ds.output_dim, ds.input_shape) == ("regression", None, 1, (7,))
    assert ds.x_mean.dtype == ds.x_std.dtype == torch.float32
    assert ds.x_mean.tolist() == [0.0] * 7 and ds.x_std.tolist() == [1.0] * 7


def test_synthetic_training_set_does_not_depend_on_n_test():
    for labels in ("gaussian", "teacher"):
        a, b = load_data(synthetic(n_test=0, labels=labels)), load_data(synthetic(n_test=30, labels=labels))
        assert torch.equal(a.X_train, b.X_train) and torch.equal(a.y_train, b.y_train), labels
        assert a.n_test == 0 and b.n_test == 30


def test_gaussian_labels_are_standard_normal():
    ds = load_data(synthetic(n=20_000, d=3, n_test=0))
    y = ds.y_train.double()
    assert abs(y.mean().item()) < 0.03 and abs(y.std().item() - 1) < 0.03


def test_teacher_labels_have_unit_variance_and_depend_on_inputs():
    ds = load_data(synthetic(n=2_000, d=3, n_test=500, labels="teacher"))
    assert abs(ds.y_train.double().std().item() - 1) < 1e-5
    # A smooth teacher: the nearest training point's label predicts a test label far better than
    # chance (for i.i.d. labels the error variance would be about 2).
    nearest = torch.cdist(ds.X_test, ds.X_train).argmin(dim=1)
    err = (ds.y_test - ds.y_train[nearest]).pow(2).mean().item()
    assert err < 0.1
    gaussian = load_data(synthetic(n=2_000, d=3, n_test=500))
    nearest = torch.cdist(gaussian.X_test, gaussian.X_train).argmin(dim=1)
    assert (gaussian.y_test - gaussian.y_train[nearest]).pow(2).mean().item() > 1.5
