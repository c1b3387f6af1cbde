"""augment_batch: CIFAR pad-4 random crop + horizontal flip, vectorized and deterministic per generator."""

import torch
import torch.nn.functional as F

from trainer.data import augment_batch


def images(n=16, C=3, H=8, W=8):
    return torch.randn(n, C, H, W, generator=torch.Generator().manual_seed(123), dtype=torch.float32)


def test_augment_is_deterministic_per_generator_and_preserves_shape():
    X = images()
    a = augment_batch(X, torch.Generator().manual_seed(7))
    b = augment_batch(X, torch.Generator().manual_seed(7))
    c = augment_batch(X, torch.Generator().manual_seed(8))
    assert a.shape == X.shape and a.dtype == X.dtype
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_augment_draws_fresh_crops_on_each_call():
    g, X = torch.Generator().manual_seed(0), images()
    assert not torch.equal(augment_batch(X, g), augment_batch(X, g))


def crop(padded_image, dy, dx, flip):
    """Reference for one image: an 8x8 window of the padded image, mirrored left-right if flip."""
    window = padded_image[:, dy : dy + 8, dx : dx + 8]
    return window.flip(-1) if flip else window


def test_every_output_is_a_crop_of_the_zero_padded_image_possibly_flipped():
    X = images(n=64)
    out = augment_batch(X, torch.Generator().manual_seed(1))
    padded = F.pad(X, (4, 4, 4, 4))
    choices = [(dy, dx, flip) for dy in range(9) for dx in range(9) for flip in (False, True)]
    seen = set()
    for i in range(len(X)):
        matches = [c for c in choices if torch.equal(out[i], crop(padded[i], *c))]
        assert matches, f"sample {i} is not a crop/flip of its input"
        seen.add(matches[0])
    # Per-sample randomness: many distinct crops, both flip states.
    assert len(seen) > 20 and {flip for _, _, flip in seen} == {False, True}


def test_augment_leaves_the_input_untouched():
    X = images()
    before = X.clone()
    augment_batch(X, torch.Generator().manual_seed(2))
    assert torch.equal(X, before)
