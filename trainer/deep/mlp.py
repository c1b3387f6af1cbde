"""The MLP of the paper's MNIST experiment: free layers, then the paired (last hidden) layer, then the output.

Regular:   f(x) = U act(W z + b) + c,  z = the earlier layers' features of x.
Pairwise (9), the constrained regime: the last hidden layer's m units are two halves W = [W_1; W_2],
           f(x) = V [act(W_1 z + b_1) - act(W_2 z + b_2)] + c,   V of shape (k, m/2), i.e. U = [V, -V].
Mirrored init (Algorithm 1) copies W_1 onto W_2, so the output is exactly 0 for every input; all m rows stay
free afterwards. The earlier layers are plain LeCun-initialized layers that train freely (Lemma 1, appendix G).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from trainer.deep.init import lecun_init_, mirror_output_channels_

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


class MLP(nn.Module):
    def __init__(self, in_features: int, hidden: list[int], out_features: int,
                 activation: Literal["relu", "tanh"], pairwise: bool) -> None:
        super().__init__()
        self.in_features = in_features
        act = ACTIVATIONS[activation]
        widths = [in_features, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-2], widths[1:-1], strict=True):
            layers += [nn.Linear(a, b), act()]
        self.body = nn.Sequential(*layers)
        self.last = nn.Linear(widths[-2], widths[-1])  # the paper's hidden layer W: paired and projected
        self.act = act()
        self.pairwise = pairwise
        m = widths[-1]
        self.out = nn.Linear(m // 2 if pairwise else m, out_features)

    def features(self, x: Tensor) -> Tensor:
        """Phi(x): act(W z + b) (regular) or the pairwise difference of the two halves (n, m/2)."""
        z = self.body(x.flatten(1))
        if not self.pairwise:
            return self.act(self.last(z))
        m, d = self.last.weight.shape
        # Both halves in one batched matmul of identical shapes: equal halves give bitwise-equal activations,
        # so the mirrored init's output is exactly 0, not ~1e-8.
        H = torch.baddbmm(self.last.bias.view(2, 1, m // 2), z.expand(2, *z.shape),
                          self.last.weight.view(2, m // 2, d).transpose(1, 2))
        A = self.act(H)
        return A[0] - A[1]

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.features(x))

    def projected_block(self) -> nn.Module:
        return self.last

    @torch.no_grad()
    def initialize_(self, seed: int) -> None:
        lecun_init_(self, seed)
        if self.pairwise:
            mirror_output_channels_(self.last)
            # v ~ N(0, 1/m) with m the full paired width, as in the shallow net's mirrored init.
            self.out.weight.mul_(0.5**0.5)  # LeCun drew it with fan-in m/2
