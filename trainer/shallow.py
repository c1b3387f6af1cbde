"""The shallow net as pure functions over config-batched tensors (leading dim C = number of configs).

Regular net (1):  f(x) = sum_j u_j sigma(w_j . x)
Pairwise net (9): f(x) = sum_{j<=m/2} v_j [sigma(w_j . x) - sigma(w_{j+m/2} . x)],  i.e. u = [v; -v].

Gradients are written out by hand: at the paper's sizes (n ~ 1e3, m ~ 1e2) autograd's bookkeeping costs more
than the four matmuls of a step, and the hand-written form is checked against autograd in the tests.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

Activation = Literal["tanh", "sigmoid", "softplus", "relu"]


def activate(h: Tensor, activation: Activation) -> Tensor:
    if activation == "tanh":
        return torch.tanh(h)
    if activation == "sigmoid":
        return torch.sigmoid(h)
    if activation == "softplus":
        return torch.nn.functional.softplus(h)
    return torch.relu(h)


def activation_grad(h: Tensor, a: Tensor, activation: Activation) -> Tensor:
    """sigma'(h), reusing a = sigma(h) where that is cheaper."""
    if activation == "tanh":
        return 1 - a * a
    if activation == "sigmoid":
        return a * (1 - a)
    if activation == "softplus":
        return torch.sigmoid(h)
    return (h > 0).to(h.dtype)


def outer_weights(v: Tensor, pairwise: bool) -> Tensor:
    """u = [v; -v] for the pairwise net (only v is a free variable), else u = v.  Shapes (C, p, k) -> (C, m, k)."""
    return torch.cat((v, -v), dim=1) if pairwise else v


def _split_halves(W: Tensor) -> Tensor:
    C, m, d = W.shape
    return W.view(C, 2, m // 2, d)


def features(X: Tensor, W: Tensor, activation: Activation, pairwise: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Return (H, A, Phi) with F = Phi v.  X: (n, d) shared, or (C, n, d) per-config batches; W: (C, m, d).

    Regular:  H = X W^T (C, n, m), Phi = A = sigma(H).
    Pairwise: both halves in one batched matmul of identical shapes, H (C, 2, n, m/2), Phi = A_1 - A_2.  Equal
    halves then give bitwise-equal activations, so the mirrored init's output is exactly 0, not just ~1e-8.
    """
    if pairwise:
        Xb = X.unsqueeze(1) if X.dim() == 3 else X
        H = torch.matmul(Xb, _split_halves(W).transpose(-1, -2))
        A = activate(H, activation)
        return H, A, A[:, 0] - A[:, 1]
    H = torch.matmul(X, W.transpose(1, 2))
    A = activate(H, activation)
    return H, A, A


def forward(X: Tensor, W: Tensor, v: Tensor, activation: Activation, pairwise: bool) -> Tensor:
    """Network outputs F: (C, n, k)."""
    return torch.matmul(features(X, W, activation, pairwise)[2], v)


def backward(X: Tensor, H: Tensor, A: Tensor, Phi: Tensor, v: Tensor, grad_out: Tensor, activation: Activation,
             pairwise: bool) -> tuple[Tensor, Tensor]:
    """Given dL/dF (C, n, k), return (dL/dW (C, m, d), dL/dv (C, p, k))."""
    grad_v = torch.matmul(Phi.transpose(-1, -2), grad_out)
    grad_Phi = torch.matmul(grad_out, v.transpose(-1, -2))
    S = activation_grad(H, A, activation)
    if pairwise:
        # dPhi/dA_1 = +1, dPhi/dA_2 = -1
        S[:, 0].mul_(grad_Phi)
        S[:, 1].mul_(grad_Phi).neg_()
        Xb = X.unsqueeze(1) if X.dim() == 3 else X
        grad_W = torch.matmul(S.transpose(-1, -2), Xb).flatten(1, 2)
    else:
        grad_W = torch.matmul(S.mul_(grad_Phi).transpose(-1, -2), X)
    return grad_W, grad_v
