"""A plain PyTorch reference loop, written the way the paper's appendix describes training: an nn.Module,
autograd, torch.optim (SGD with momentum or Adam) and a projection of W after each step.

It is the baseline our trainer is timed against (bench/bench_trainer.py) and compared with (tests/trainer).
It shares only the initialization with narrownet, so both start from the same weights.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from trainer.data import Dataset
from trainer.init import lecun_init, mirrored_lecun_init
from trainer.spec import JobSpec

ACTIVATIONS = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "softplus": nn.functional.softplus, "relu": torch.relu}


class ShallowNet(nn.Module):
    def __init__(self, W: torch.Tensor, v: torch.Tensor, activation: str, pairwise: bool) -> None:
        super().__init__()
        self.W = nn.Parameter(W.clone())
        self.v = nn.Parameter(v.clone())
        self.act = ACTIVATIONS[activation]
        self.pairwise = pairwise

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        u = torch.cat((self.v, -self.v)) if self.pairwise else self.v
        return self.act(X @ self.W.T) @ u


def reference_train(spec: JobSpec, data: Dataset, steps: int, device: torch.device | None = None) -> ShallowNet:
    """Full-batch training of a shallow spec for `steps` steps (square loss, constant schedule) on `device`."""
    device = device or torch.device("cpu")
    X, Y = data.X_train.flatten(1).to(device), data.y_train.to(device)
    m, d, k = spec.model.width, X.shape[1], Y.shape[1]  # type: ignore[union-attr]
    pairwise = spec.regime == "constrained"
    W, v = (mirrored_lecun_init if pairwise else lecun_init)(m, d, k, spec.seed)
    net = ShallowNet(W.to(device), v.to(device), spec.model.activation, pairwise)  # type: ignore[union-attr]
    W0 = net.W.detach().clone()
    o = spec.optim
    groups = [{"params": [net.W], "lr": o.hidden_lr}, {"params": [net.v], "lr": o.outer_lr}]
    if o.name == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(groups, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)
    else:
        opt = torch.optim.SGD(groups, momentum=o.momentum, nesterov=o.nesterov, weight_decay=o.weight_decay)
    r = spec.radius
    for _ in range(steps):
        opt.zero_grad()
        loss = 0.5 * (net(X) - Y).pow(2).sum(dim=1).mean()
        loss.backward()
        opt.step()
        if math.isfinite(r):
            with torch.no_grad():
                D = net.W - W0
                norm = D.norm()
                if norm > r:
                    net.W.copy_(W0 + D * (r / norm))
    return net
