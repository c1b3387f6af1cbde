"""Optimizer steps over config-batched parameters, matching torch.optim.SGD / torch.optim.Adam semantics.

Each step works in place on the parameter and its state; lr is a tensor broadcastable to the parameter, so
every config in a sweep can have its own learning rate.
"""

from __future__ import annotations

import math

from torch import Tensor


def sgd_step_(param: Tensor, grad: Tensor, buf: Tensor | None, lr: Tensor, momentum: float,
              weight_decay: float, nesterov: bool) -> None:
    """torch.optim.SGD with dampening 0: b <- mu b + g (+ wd p); p <- p - lr (g + mu b if nesterov else b)."""
    if weight_decay:
        grad = grad.add(param, alpha=weight_decay)
    if buf is None:
        param.addcmul_(grad, lr, value=-1)
        return
    buf.mul_(momentum).add_(grad)
    direction = grad.add(buf, alpha=momentum) if nesterov else buf
    param.addcmul_(direction, lr, value=-1)


def adam_step_(param: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, lr: Tensor, step: int,
               betas: tuple[float, float], eps: float, weight_decay: float) -> None:
    """torch.optim.Adam (L2 weight decay added to the gradient); `step` counts from 1."""
    beta1, beta2 = betas
    if weight_decay:
        grad = grad.add(param, alpha=weight_decay)
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    bias1 = 1 - beta1**step
    bias2_sqrt = math.sqrt(1 - beta2**step)
    denom = (exp_avg_sq.sqrt() / bias2_sqrt).add_(eps)
    param.sub_(exp_avg / denom * (lr / bias1))
