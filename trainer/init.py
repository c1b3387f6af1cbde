"""Initializations: LeCun (regular regime) and mirrored LeCun (Algorithm 1, constrained regime).

Random numbers are drawn on the CPU from a generator seeded per config, so a config gets the same initial
weights alone, inside a sweep, and on any device.
"""

from __future__ import annotations

import torch
from torch import Tensor


def lecun_init(m: int, d: int, k: int, seed: int) -> tuple[Tensor, Tensor]:
    """w_j ~ N(0, I/d), u_j ~ N(0, 1/m): variance 1/fan_in for both layers.  Returns W (m, d), u (m, k)."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(m, d, generator=g, dtype=torch.float32) / d**0.5
    u = torch.randn(m, k, generator=g, dtype=torch.float32) / m**0.5
    return W, u


def mirrored_lecun_init(m: int, d: int, k: int, seed: int) -> tuple[Tensor, Tensor]:
    """Algorithm 1: LeCun-draw the first half, copy w_{j+m/2} = w_j; the copy's outer weight is -v_j.

    Returns W (m, d) and the free outer weights v (m/2, k); the net's output is exactly 0 for every input.
    """
    if m % 2:
        raise ValueError(f"mirrored init needs an even width, got {m}")
    g = torch.Generator().manual_seed(seed)
    half = torch.randn(m // 2, d, generator=g, dtype=torch.float32) / d**0.5
    v = torch.randn(m // 2, k, generator=g, dtype=torch.float32) / m**0.5
    return torch.cat((half, half.clone())), v


def init_batch(regime: str, m: int, d: int, k: int, seeds: list[int]) -> tuple[Tensor, Tensor]:
    """Stack per-config initializations: W (C, m, d), v (C, p, k)."""
    init = mirrored_lecun_init if regime == "constrained" else lecun_init
    pairs = [init(m, d, k, s) for s in seeds]
    return torch.stack([W for W, _ in pairs]), torch.stack([v for _, v in pairs])
