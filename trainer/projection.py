"""Projections of Algorithm 2: W onto the Frobenius ball around W0, v onto the set V of problem (10)."""

from __future__ import annotations

import torch
from torch import Tensor


def project_onto_ball_(W: Tensor, W0: Tensor, radius: Tensor) -> Tensor:
    """In place: W <- W0 + (W - W0) * min(1, r / ||W - W0||_F), one ball per config (leading dim C).

    radius: (C,), +inf where a config is unconstrained.  Returns the distances ||W - W0||_F before projecting.
    """
    # float64: a float32 sum of squares overflows to inf for entries ~1e19, which would make the scale 0 and
    # silently snap W back to W0 instead of onto the sphere.
    dist = torch.linalg.vector_norm((W - W0).flatten(1), dim=1, dtype=torch.float64)
    # r / 0 = inf and inf / d = inf both clamp to 1: no division guard needed.
    scale = (radius.to(torch.float64) / dist).clamp_(max=1.0)
    # lerp(W0, W, 1) is W exactly (torch evaluates weights >= 0.5 as W - (W - W0)(1 - s)), so points inside the
    # ball are left bit for bit; W0 + (W - W0) would not be.
    torch.lerp(W0, W, scale.to(W.dtype).view(-1, *([1] * (W.dim() - 1))), out=W)
    return dist


def project_onto_v_set(v: Tensor, zeta: float, gamma: float) -> Tensor:
    """Euclidean projection of v onto V = {|v_j| >= zeta, max_j |v_j| <= gamma min_j |v_j|} among
    sign-preserving points (sign 0 counts as +), one projection per config (leading dim C).

    Every point of V has its magnitudes in [t, gamma t] for t = min|v| >= zeta, so the projection clips |v| into
    [t*, gamma t*] where t* minimises f(t) = sum_j dist(|v_j|, [t, gamma t])^2 over t >= zeta.  f is convex and
    piecewise quadratic with breakpoints at |v_j| and |v_j|/gamma: on each piece the stationary point is
    t = (S_L + gamma S_U) / (n_L + gamma^2 n_U), with L = {|v_j| < t}, U = {|v_j| > gamma t}; we evaluate it on
    every piece (prefix sums over the sorted magnitudes) and keep the best.  O(p log p) per config.
    """
    C = v.shape[0]
    sign = torch.where(v < 0, -1.0, 1.0).to(v.dtype)
    if gamma == float("inf"):  # no ratio bound: only the floor |v_j| >= zeta binds
        return sign * v.abs().clamp_min(zeta)
    a = v.abs().reshape(C, -1).to(torch.float64)
    a_sorted, _ = a.sort(dim=1)
    p = a.shape[1]
    zeros = torch.zeros(C, 1, dtype=a.dtype, device=a.device)
    s1 = torch.cat((zeros, a_sorted.cumsum(1)), dim=1)  # s1[:, i] = sum of the i smallest
    s2 = torch.cat((zeros, a_sorted.square().cumsum(1)), dim=1)

    # Candidate pieces: between consecutive sorted breakpoints (plus both unbounded ends), clipped to t >= zeta.
    bps = torch.cat((a_sorted, a_sorted / gamma, torch.full((C, 1), zeta, dtype=a.dtype, device=a.device)), 1)
    bps = bps.clamp_min(zeta).sort(dim=1).values
    lo = torch.cat((torch.full((C, 1), zeta, dtype=a.dtype, device=a.device), bps), dim=1)
    hi = torch.cat((bps, torch.full((C, 1), float("inf"), dtype=a.dtype, device=a.device)), dim=1)
    mid = torch.where(torch.isinf(hi), lo + 1.0, (lo + hi) / 2)

    n_low = torch.searchsorted(a_sorted, mid, right=False)  # |v_j| < t
    n_not_up = torch.searchsorted(a_sorted, gamma * mid, right=True)  # |v_j| <= gamma t
    n_up = p - n_not_up
    S_L = s1.gather(1, n_low)
    Q_L = s2.gather(1, n_low)
    S_U = s1[:, -1:] - s1.gather(1, n_not_up)
    Q_U = s2[:, -1:] - s2.gather(1, n_not_up)
    denom = n_low + gamma**2 * n_up
    t_star = torch.where(denom > 0, (S_L + gamma * S_U) / denom.clamp_min(1e-300), lo)
    t = torch.minimum(torch.maximum(t_star, lo), hi)
    f = n_low * t**2 - 2 * t * S_L + Q_L + Q_U - 2 * gamma * t * S_U + gamma**2 * t**2 * n_up
    best = t.gather(1, f.argmin(dim=1, keepdim=True))  # (C, 1)
    clipped = torch.minimum(torch.maximum(a, best), gamma * best).to(v.dtype)
    return sign * clipped.reshape(v.shape)
