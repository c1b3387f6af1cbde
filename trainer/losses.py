"""Losses over config-batched outputs F (C, n, k), each returning the per-config loss and dL/dF.

square:        l = 1/(2n) sum_i ||f(x_i) - y_i||^2   (the paper's (2), averaged so learning rates do not
               scale with n)
cross_entropy: l = 1/n sum_i -log softmax(f(x_i))_{y_i}
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

LossName = Literal["square", "cross_entropy"]


def loss_value(F: Tensor, Y: Tensor, loss: LossName) -> Tensor:
    """Per-config loss (C,).  Y: targets (n, k) float for square, labels (n,) int64 for cross-entropy."""
    if loss == "square":
        return 0.5 * (F - Y).square().sum(dim=-1).mean(dim=-1)
    logp = torch.log_softmax(F, dim=-1)
    return -logp.gather(-1, Y.expand(F.shape[0], -1).unsqueeze(-1)).squeeze(-1).mean(dim=-1)


def loss_and_grad(F: Tensor, Y: Tensor, loss: LossName, with_value: bool = True) -> tuple[Tensor | None, Tensor]:
    """(per-config loss or None, dL/dF); a training step skips the value (metrics evaluate it separately)."""
    n = F.shape[-2]
    if loss == "square":
        R = F - Y
        return (0.5 * R.square().sum(dim=-1).mean(dim=-1) if with_value else None), R.div_(n)
    logp = torch.log_softmax(F, dim=-1)
    labels = Y.expand(F.shape[0], -1).unsqueeze(-1)
    value = -logp.gather(-1, labels).squeeze(-1).mean(dim=-1) if with_value else None
    grad = logp.exp_()
    grad.scatter_add_(-1, labels, torch.full_like(labels, -1, dtype=grad.dtype))
    return value, grad.div_(n)


def accuracy(F: Tensor, labels: Tensor) -> Tensor:
    """Per-config fraction of argmax predictions equal to the labels (n,)."""
    return (F.argmax(dim=-1) == labels).to(F.dtype).mean(dim=-1)
