"""CIFAR-style training augmentation on a whole batch at once: pad-4 random crop and horizontal flip."""

from __future__ import annotations

import torch
import torch.nn.functional as F

PAD = 4


def augment_batch(X: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image (n, C, H, W) gets its own crop offset in [0, 2*PAD] per axis and a fair-coin h-flip.

    Zero padding: on standardized inputs zero is the channel mean. Random draws are made on the
    generator's device and moved to X's, so the result depends only on the generator's state.
    """
    n, _, H, W = X.shape
    dev = generator.device
    oy = torch.randint(0, 2 * PAD + 1, (n,), generator=generator, device=dev).to(X.device)
    ox = torch.randint(0, 2 * PAD + 1, (n,), generator=generator, device=dev).to(X.device)
    flip = (torch.rand(n, generator=generator, device=dev) < 0.5).to(X.device)
    padded = F.pad(X, (PAD, PAD, PAD, PAD))
    rows = oy[:, None] + torch.arange(H, device=X.device)  # (n, H)
    cols_fwd = torch.arange(W, device=X.device)
    cols = ox[:, None] + torch.where(flip[:, None], cols_fwd.flip(0), cols_fwd)  # (n, W)
    batch = torch.arange(n, device=X.device)[:, None, None, None]
    channel = torch.arange(X.shape[1], device=X.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]
