"""The "V switched on" run family: zeta and gamma of problem (10) set from the outer weights at initialization.

zeta = 0.5 min_j |v0_j| and gamma = 2 max_j |v0_j| / min_j |v0_j|: V then holds v0 with room on both sides, so the
projection can bind only once training has moved v; how often it binds is the measurement (the paper reports that
v never reached the boundary of V). One (zeta, gamma) per initialization seed.
"""

from __future__ import annotations

import torch

from trainer.init import init_batch

ZETA_FRACTION = 0.5
GAMMA_FACTOR = 2.0
RULE = f"zeta = {ZETA_FRACTION:g} min|v0|, gamma = {GAMMA_FACTOR:g} max|v0| / min|v0|"


def v_set_from(v0: torch.Tensor) -> tuple[float, float]:
    """(zeta, gamma) for the outer weights v0 at initialization (every entry, any shape)."""
    a = v0.detach().abs().flatten().double()
    lo, hi = float(a.min()), float(a.max())
    if lo == 0.0:
        raise ValueError("v0 has a zero entry: no zeta > 0 keeps it in V")
    return ZETA_FRACTION * lo, max(1.0, GAMMA_FACTOR * hi / lo)


def shallow_v_set(width: int, d: int, seed: int, k: int = 1) -> tuple[float, float]:
    """(zeta, gamma) from the pairwise shallow net's mirrored init for this seed (v0 has width/2 x k entries)."""
    _, v0 = init_batch("constrained", width, d, k, [seed])
    return v_set_from(v0)
