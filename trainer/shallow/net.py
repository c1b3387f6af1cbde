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


# Rows of a workspace buffer start at multiples of this many elements (64 floats covers AVX-512's unrolled loop).
ROW_ALIGN = 64


class Workspace:
    """Reusable output buffers, keyed by name and shape.

    A sweep's activations are (C, n, m) floats, tens of MB: allocating them afresh each step sends every
    allocation through mmap/munmap and its page faults, which cost 3x the arithmetic (bench/RESULTS.md).

    The last dimension is padded to a multiple of ROW_ALIGN (the buffer is a view of the unpadded part). Torch's
    elementwise kernels run the vectorized code over a contiguous range and a scalar tail at its end, and the two
    round transcendental functions (sigmoid, exp) differently; over a contiguous (C, q, n) buffer where a tail
    falls would depend on C, so a config trained in a pack would drift from the same config trained alone. Over
    padded rows every row is its own range, the same whatever C is, so (on one thread) a config's arithmetic is
    bit for bit the same alone and in a pack of any size.
    """

    def __init__(self) -> None:
        self._buffers: dict[tuple[str, tuple[int, ...]], Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], like: Tensor) -> Tensor:
        key = (name, tuple(shape))
        buf = self._buffers.get(key)
        if buf is None or buf.dtype != like.dtype or buf.device != like.device:
            *outer, last = shape
            padded = last + (-last) % ROW_ALIGN
            storage = torch.empty((*outer, padded), dtype=like.dtype, device=like.device)
            buf = self._buffers[key] = storage[..., :last]
        return buf


def _buffer(ws: Workspace | None, name: str, shape: tuple[int, ...], like: Tensor) -> Tensor | None:
    """A workspace buffer, or None (= let torch allocate, which also keeps autograd usable)."""
    return ws.get(name, shape, like) if ws is not None else None


# sigma(h) = scale * base(slope * h) + shift.  tanh(h) = 2 sigmoid(2h) - 1: torch's CPU tanh runs ~10x slower
# than its sigmoid (2.3 vs 0.24 ns/element here), and keeping the base form lets the constants fold into the small
# (m, d) and (m, k) tensors instead of costing passes over the (m, n) activations.  In the pairwise net
# Phi = sigma(H_1) - sigma(H_2), so the shift cancels; scaling by the power of two `slope` is exact.
_AFFINE: dict[str, tuple[str, float, float, float]] = {
    "tanh": ("sigmoid", 2.0, 2.0, -1.0),
    "sigmoid": ("sigmoid", 1.0, 1.0, 0.0),
    "softplus": ("softplus", 1.0, 1.0, 0.0),
    "relu": ("relu", 1.0, 1.0, 0.0),
}


def _base_into(H: Tensor, base: str, ws: Workspace | None, name: str) -> Tensor:
    """B = base(H); in place over H where the derivative needs only B (sigmoid)."""
    if base == "sigmoid":
        return H.sigmoid_() if ws is not None else torch.sigmoid(H)
    if base == "relu":
        return torch.clamp_min(H, 0, out=_buffer(ws, name, H.shape, H))
    return torch.nn.functional.softplus(H)  # no out= form


def _base_derivative_into(H: Tensor, B: Tensor, base: str) -> Tensor:
    """base'(H), overwriting H (and B where it aliases H): both are spent once the gradient is formed."""
    if base == "sigmoid":  # B - B^2
        return torch.addcmul(B, B, B, value=-1, out=H)
    if base == "softplus":
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
    """Return (Hs, Bs, Phi^T): pre-activations, base activations and base features, laid out (C, units, n).

    The network's features are scale * Phi + shift (see _AFFINE; `outputs` applies them).
    X: (n, d) shared by all configs, or (C, n, d) per-config batches; W: (C, m, d).
    Regular:  Phi = B = base(slope H).
    Pairwise: Phi = B_1 - B_2, the halves through two GEMMs of identical shape on contiguous copies, so equal halves
    give bitwise-equal activations and the mirrored init's output is exactly 0 (one GEMM over both halves does
    not guarantee it: edge tiles can round differently).
    With a workspace, buffers are reused across steps and sigmoid bases are computed in place.
    """
    base, slope, _, _ = _AFFINE[activation]
    C, m, d = W.shape
    if not pairwise:
        H = _pre_activations(X, W * slope if slope != 1 else W, ws, "H")
        B = _base_into(H, base, ws, "B")
        return (H,), (B,), B
    p = m // 2
    # The contiguous copies double as the slope scaling.
    H1 = _pre_activations(X, torch.mul(W[:, :p], slope), ws, "H1")
    H2 = _pre_activations(X, torch.mul(W[:, p:], slope), ws, "H2")
    B1 = _base_into(H1, base, ws, "B1")
    B2 = _base_into(H2, base, ws, "B2")
    return (H1, H2), (B1, B2), torch.sub(B1, B2, out=_buffer(ws, "Phi", B1.shape, B1))


def per_config_mm(a: Tensor, b: Tensor) -> Tensor:
    """bmm(a, b) as one mm per config.  torch's CPU bmm computes a batch of one (a lone job) with another kernel
    than a batch of C (a pack) when `a` has a single row, so the two rounded differently and a config drifted
    from its lone run; C mm calls of one shape are the same arithmetic whatever C is (on one thread)."""
    if a.shape[0] == 1:
        return torch.mm(a[0], b[0]).unsqueeze(0)
    if a.requires_grad or b.requires_grad:  # autograd (tests, the deep nets' checks) cannot follow out=
        return torch.stack([torch.mm(a[c], b[c]) for c in range(a.shape[0])])
    out = a.new_empty((a.shape[0], a.shape[1], b.shape[2]))
    for c in range(a.shape[0]):
        torch.mm(a[c], b[c], out=out[c])
    return out


def outputs_t(Phi_t: Tensor, v: Tensor, activation: Activation, pairwise: bool) -> Tensor:
    """F^T = scale v^T Phi^T (+ shift sum_j u_j when not pairwise): (C, k, n).  This orientation is a plain bmm;
    Phi v with Phi^T transposed is ~15x slower for k = 1 on CPU."""
    _, _, scale, shift = _AFFINE[activation]
    F_t = per_config_mm(v.transpose(1, 2), Phi_t)
    if scale != 1:
        F_t = F_t.mul_(scale) if not F_t.requires_grad else F_t * scale
    if shift and not pairwise:
        F_t = F_t + shift * v.sum(dim=1).unsqueeze(-1)
    return F_t


def outputs(Phi_t: Tensor, v: Tensor, activation: Activation, pairwise: bool) -> Tensor:
    """F = sigma-features times outer weights: (C, n, k)."""
    return outputs_t(Phi_t, v, activation, pairwise).transpose(1, 2)


def forward(X: Tensor, W: Tensor, v: Tensor, activation: Activation, pairwise: bool) -> Tensor:
    """Network outputs F: (C, n, k)."""
    return outputs(features(X, W, activation, pairwise)[2], v, activation, pairwise)


def backward(X: Tensor, Hs: tuple[Tensor, ...], Bs: tuple[Tensor, ...], Phi_t: Tensor, v: Tensor,
             grad_out: Tensor, activation: Activation, pairwise: bool,
             ws: Workspace | None = None) -> tuple[Tensor, Tensor]:
    """Given dL/dF (C, n, k), return (dL/dW (C, m, d), dL/dv (C, p, k)).  Overwrites Hs and Bs."""
    base, slope, scale, shift = _AFFINE[activation]
    grad_t = grad_out.transpose(1, 2).contiguous()  # (C, k, n): small
    grad_v = torch.bmm(grad_t, Phi_t.transpose(1, 2)).transpose(1, 2).mul_(scale)
    if shift and not pairwise:
        grad_v += shift * grad_t.sum(dim=2).unsqueeze(1)
    buf = _buffer(ws, "grad_Phi", Phi_t.shape, Phi_t)
    if v.shape[-1] == 1:  # scalar output: the outer product v g^T as a broadcast multiply (bmm is ~18x slower)
        grad_phi = torch.mul(v, grad_t, out=buf)
    else:
        grad_phi = torch.bmm(v, grad_t, out=buf)
    grads = [_weight_grad(_base_derivative_into(H, B, base).mul_(grad_phi), X) for H, B in zip(Hs, Bs, strict=True)]
    # d sigma / dh = scale * slope * base'(slope h); for the pairwise net dPhi/dB_2 = -1.  Both land on the small
    # (units, d) gradients rather than on the (units, n) activations.
    if pairwise:
        return torch.cat((grads[0], grads[1].neg_()), dim=1).mul_(scale * slope), grad_v
    return grads[0].mul_(scale * slope), grad_v
