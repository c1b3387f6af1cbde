"""Problem (10) for a block of layers: all of the block's parameters, as one vector, stay within the Frobenius
ball of radius r around their initial values."""

from __future__ import annotations

import torch
from torch import Tensor


def distance_from(params: list[Tensor], init: list[Tensor]) -> Tensor:
    """||theta - theta_0||_2 over all tensors as one vector (float64 0-d tensor; no host sync)."""
    diffs = torch._foreach_sub(params, init)
    return _norm(diffs)


def _norm(tensors: list[Tensor] | tuple[Tensor, ...]) -> Tensor:
    # float64 sums: a float32 sum of squares overflows for entries ~1e19 and would snap theta back to theta_0.
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tensors, 2, dtype=torch.float64)))


@torch.no_grad()
def project_block_onto_ball_(params: list[Tensor], init: list[Tensor], radius: float) -> Tensor:
    """In place: theta <- theta_0 + (theta - theta_0) * min(1, r / ||theta - theta_0||), as Algorithm 2's P_ball
    on the block's concatenated parameters. Returns the distance before projecting."""
    dist = distance_from(params, init)
    # theta.lerp(theta_0, 1 - s) = theta_0 + s (theta - theta_0), and leaves theta bit-for-bit unchanged when it is
    # inside the ball (s = 1). r / 0 = inf clamps to s = 1, so no division guard; s stays on the device (no sync).
    toward_init = (1.0 - (radius / dist).clamp(max=1.0)).to(params[0].dtype)
    for p, p0 in zip(params, init, strict=True):
        p.lerp_(p0, toward_init)
    return dist
