"""Diagnostics the paper plots, as pure functions over config-batched tensors."""

from __future__ import annotations

import torch
from torch import Tensor

from trainer.shallow.net import Activation, activate, activation_grad
from trainer.sizes import JACOBIAN_MAX_SAMPLES


def jacobian_sigma_min(X: Tensor, W: Tensor, u: Tensor, activation: Activation) -> Tensor | None:
    """Smallest singular value of J = d f(X) / d W (Figure 4 c/d), one per config.

    Row i of J is [u_j sigma'(w_j . x_i) x_i]_j, so J J^T = (X X^T) o (S diag(u^2) S^T) with S = sigma'(X W^T):
    an n x n Gram matrix, built without materializing J (n x m d).  J has min(n, m d) singular values; the
    smallest is the square root of the (n - min(n, m d) + 1)-th smallest eigenvalue of J J^T.
    Only for scalar outputs (k = 1) and n <= JACOBIAN_MAX_SAMPLES; None otherwise.
    """
    n, d = X.shape
    C, m, k = u.shape
    if k != 1 or n > JACOBIAN_MAX_SAMPLES:
        return None
    H = X.to(torch.float64) @ W.to(torch.float64).transpose(1, 2)
    A = activate(H, activation)
    S = activation_grad(H, A, activation)  # (C, n, m)
    Su = S * u.to(torch.float64).transpose(1, 2)  # (C, n, m): S diag(u)
    gram = (X.to(torch.float64) @ X.to(torch.float64).T) * (Su @ Su.transpose(1, 2))
    # A diverged config (inf/NaN weights) must not break the decomposition for the others in a sweep.
    finite = torch.isfinite(gram).flatten(1).all(dim=1)
    gram = torch.where(finite.view(-1, 1, 1), gram, torch.eye(n, dtype=gram.dtype, device=gram.device))
    eig = torch.linalg.eigvalsh(gram)  # ascending
    index = n - min(n, m * d)
    sigma = eig[:, index].clamp_min(0).sqrt()
    return torch.where(finite, sigma, torch.nan).to(W.dtype)


def outer_weight_stats(v: Tensor) -> tuple[Tensor, Tensor]:
    """min_j |v_j| and max_j |v_j| / min_j |v_j| per config (the quantities V constrains)."""
    a = v.abs().flatten(1)
    vmin = a.min(dim=1).values
    return vmin, a.max(dim=1).values / vmin
