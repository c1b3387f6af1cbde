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
        # tanh(h) = 2 sigmoid(2h) - 1: torch's CPU tanh kernel runs ~10x slower than its sigmoid (2.3 vs 0.24
        # ns/element on this project's CPU), and tanh dominates a step's elementwise work.
        return torch.sigmoid(2 * h).mul(2).sub(1)
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


class Workspace:
    """Reusable output buffers, keyed by name and shape.

    A sweep's activations are (C, n, m) floats, tens of MB: allocating them afresh each step sends every
    allocation through mmap/munmap and its page faults, which cost 3x the arithmetic (bench/RESULTS.md).
    """

    def __init__(self) -> None:
        self._buffers: dict[tuple[str, tuple[int, ...]], Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], like: Tensor) -> Tensor:
        key = (name, tuple(shape))
        buf = self._buffers.get(key)
        if buf is None or buf.dtype != like.dtype or buf.device != like.device:
            buf = self._buffers[key] = torch.empty(shape, dtype=like.dtype, device=like.device)
        return buf


def _buffer(ws: Workspace | None, name: str, shape: tuple[int, ...], like: Tensor) -> Tensor | None:
    """A workspace buffer, or None (= let torch allocate, which also keeps autograd usable)."""
    return ws.get(name, shape, like) if ws is not None else None


def _activate_into(H: Tensor, activation: Activation, ws: Workspace | None, name: str) -> Tensor:
    """A = sigma(H); in place over H where the derivative can be had from A alone (tanh, sigmoid)."""
    if ws is not None and activation == "tanh":
        return H.mul_(2).sigmoid_().mul_(2).sub_(1)  # = tanh(H), see activate()
    if ws is not None and activation == "sigmoid":
        return H.sigmoid_()
    if activation == "relu":
        return torch.clamp_min(H, 0, out=_buffer(ws, name, H.shape, H))
    return activate(H, activation)  # softplus has no out= form; without a workspace, keep H for autograd


def _derivative_into(H: Tensor, A: Tensor, activation: Activation) -> Tensor:
    """sigma'(H), overwriting H (and A where it aliases H): both are spent once the gradient is formed."""
    if activation == "tanh":  # 1 - A^2
        return torch.addcmul(torch.ones((), dtype=A.dtype, device=A.device), A, A, value=-1, out=H)
    if activation == "sigmoid":  # A - A^2
        return torch.addcmul(A, A, A, value=-1, out=H)
    if activation == "softplus":
        return H.sigmoid_()
    return H.gt_(0)  # relu: 1.0 where H > 0, in H's dtype


def outer_weights(v: Tensor, pairwise: bool) -> Tensor:
    """u = [v; -v] for the pairwise net (only v is a free variable), else u = v.  Shapes (C, p, k) -> (C, m, k)."""
    return torch.cat((v, -v), dim=1) if pairwise else v


def _pre_activations(X: Tensor, W: Tensor, ws: Workspace | None, name: str) -> Tensor:
    """H^T = W X^T, laid out (C, q, n).  A shared X (n, d) makes this ONE (C q, d) x (d, n) GEMM for all
    configs (no per-config copy of X); per-config batches X (C, n, d) use bmm."""
    C, q, d = W.shape
    if X.dim() == 2:
        n = X.shape[0]
        out = _buffer(ws, name, (C, q, n), W)
        H = torch.mm(W.reshape(C * q, d), X.T, out=None if out is None else out.view(C * q, n))
        return H.view(C, q, n)
    return torch.bmm(W, X.transpose(1, 2), out=_buffer(ws, name, (C, q, X.shape[1]), W))


def _weight_grad(S: Tensor, X: Tensor) -> Tensor:
    """dL/dW = S X with S = dL/dH^T (C, q, n)."""
    C, q, n = S.shape
    if X.dim() == 2:
        return torch.mm(S.reshape(C * q, n), X).view(C, q, X.shape[1])
    return torch.bmm(S, X)


def features(X: Tensor, W: Tensor, activation: Activation, pairwise: bool,
             ws: Workspace | None = None) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...], Tensor]:
    """Return (Hs, As, Phi^T) with outputs F = Phi v; everything laid out (C, units, n).

    X: (n, d) shared by all configs, or (C, n, d) per-config batches; W: (C, m, d).
    Regular:  Hs = (H,), As = (sigma(H),), Phi = A.
    Pairwise: the halves W_1, W_2 go through two GEMMs of identical shape on contiguous copies, so equal halves
    give bitwise-equal activations and the mirrored init's output is exactly 0 (one GEMM over both halves does
    not guarantee it: edge tiles can round differently).  Phi = sigma(H_1) - sigma(H_2).
    With a workspace, tanh/sigmoid activate in place (A aliases H) and buffers are reused across steps.
    """
    C, m, d = W.shape
    if not pairwise:
        H = _pre_activations(X, W, ws, "H")
        A = _activate_into(H, activation, ws, "A")
        return (H,), (A,), A
    p = m // 2
    H1 = _pre_activations(X, W[:, :p].contiguous(), ws, "H1")
    H2 = _pre_activations(X, W[:, p:].contiguous(), ws, "H2")
    A1 = _activate_into(H1, activation, ws, "A1")
    A2 = _activate_into(H2, activation, ws, "A2")
    return (H1, H2), (A1, A2), torch.sub(A1, A2, out=_buffer(ws, "Phi", A1.shape, A1))


def outputs_t(Phi_t: Tensor, v: Tensor) -> Tensor:
    """F^T = v^T Phi^T: (C, k, n).  This orientation is a plain bmm; F = Phi v with Phi^T transposed is ~15x
    slower for k = 1 on CPU."""
    return torch.bmm(v.transpose(1, 2), Phi_t)


def outputs(Phi_t: Tensor, v: Tensor) -> Tensor:
    """F = Phi v: (C, n, k)."""
    return outputs_t(Phi_t, v).transpose(1, 2)


def forward(X: Tensor, W: Tensor, v: Tensor, activation: Activation, pairwise: bool) -> Tensor:
    """Network outputs F: (C, n, k)."""
    return outputs(features(X, W, activation, pairwise)[2], v)


def backward(X: Tensor, Hs: tuple[Tensor, ...], As: tuple[Tensor, ...], Phi_t: Tensor, v: Tensor, grad_out: Tensor,
             activation: Activation, pairwise: bool, ws: Workspace | None = None) -> tuple[Tensor, Tensor]:
    """Given dL/dF (C, n, k), return (dL/dW (C, m, d), dL/dv (C, p, k)).  Overwrites Hs and As."""
    grad_t = grad_out.transpose(1, 2).contiguous()  # (C, k, n): small
    grad_v = torch.bmm(grad_t, Phi_t.transpose(1, 2)).transpose(1, 2)
    buf = _buffer(ws, "grad_Phi", Phi_t.shape, Phi_t)
    if v.shape[-1] == 1:  # scalar output: the outer product v g^T as a broadcast multiply (bmm is ~18x slower)
        grad_phi = torch.mul(v, grad_t, out=buf)
    else:
        grad_phi = torch.bmm(v, grad_t, out=buf)
    grads = [_weight_grad(_derivative_into(H, A, activation).mul_(grad_phi), X) for H, A in zip(Hs, As, strict=True)]
    if pairwise:  # dPhi/dA_2 = -1: negate the small (m/2, d) gradient, not the (m/2, n) activations
        return torch.cat((grads[0], grads[1].neg_()), dim=1), grad_v
    return grads[0], grad_v
