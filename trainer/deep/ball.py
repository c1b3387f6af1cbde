"""Problem (10) for a block of layers: all of the block's parameters, as one vector, stay within the Frobenius
ball of radius r around their initial values."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor


def distance_from(params: Sequence[Tensor], init: Sequence[Tensor]) -> Tensor:
    """||theta - theta_0||_2 over all tensors as one vector, summed in float64 (a 0-d tensor; no host sync)."""
    diffs = torch._foreach_sub(list(params), list(init))
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(diffs, 2, dtype=torch.float64)))


@torch.no_grad()
def project_block_onto_ball_(params: Sequence[Tensor], init: Sequence[Tensor], radius: float,
                             scratch: list[Tensor] | None = None) -> Tensor:
    """In place: theta <- theta_0 + (theta - theta_0) * min(1, r / ||theta - theta_0||), Algorithm 2's P_ball on
    the block's concatenated parameters. Returns the distance before projecting.

    scratch: preallocated tensors shaped like params; passing them saves a fresh allocation of the block's size
    per call (on CPU that allocation, page faults included, cost more than the projection's arithmetic).
    """
    if scratch is None:
        scratch = [torch.empty_like(p) for p in params]
    for p, p0, d in zip(params, init, scratch, strict=True):
        torch.sub(p, p0, out=d)
    dist = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(scratch)))
    # theta.lerp(theta_0, 1 - s) = theta_0 + s (theta - theta_0), and leaves theta bit-for-bit unchanged when it is
    # inside the ball (s = 1); r / 0 = inf clamps to s = 1. The weight stays on the device (no host sync).
    toward_init = 1.0 - (radius / dist).clamp(max=1.0)
    # A distance past float32's range means the block diverged: make it NaN, which the loop reports as divergence,
    # instead of silently snapping theta back to theta_0 (s = r / inf = 0).
    toward_init = torch.where(torch.isfinite(dist), toward_init, math.nan).to(params[0].dtype)
    for p, p0 in zip(params, init, strict=True):
        p.lerp_(p0, toward_init)
    return dist
