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


def reduce_outer_grad(grad_u: Tensor, pairwise: bool) -> Tensor:
    """Chain rule through u = [v; -v]: dL/dv = dL/du_top - dL/du_bottom."""
    if not pairwise:
        return grad_u
    p = grad_u.shape[1] // 2
    return grad_u[:, :p] - grad_u[:, p:]


def hidden(X: Tensor, W: Tensor, activation: Activation) -> tuple[Tensor, Tensor]:
    """Pre-activations H = X W^T and activations A = sigma(H).  X: (n, d) or (C, n, d); W: (C, m, d)."""
    H = torch.matmul(X, W.transpose(1, 2))
    return H, activate(H, activation)


def forward(X: Tensor, W: Tensor, v: Tensor, activation: Activation, pairwise: bool) -> Tensor:
    """Network outputs F: (C, n, k)."""
    _, A = hidden(X, W, activation)
    return torch.matmul(A, outer_weights(v, pairwise))


def backward(
    X: Tensor, H: Tensor, A: Tensor, u: Tensor, grad_out: Tensor, activation: Activation, pairwise: bool
) -> tuple[Tensor, Tensor]:
    """Given dL/dF (C, n, k), return (dL/dW (C, m, d), dL/dv (C, p, k))."""
    grad_u = torch.matmul(A.transpose(1, 2), grad_out)
    grad_H = torch.matmul(grad_out, u.transpose(1, 2)).mul_(activation_grad(H, A, activation))
    grad_W = torch.matmul(grad_H.transpose(1, 2), X)
    return grad_W, reduce_outer_grad(grad_u, pairwise)
