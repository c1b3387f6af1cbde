"""Initializations for deep nets: LeCun everywhere (both regimes, as the paper's appendix H says), then
Algorithm 1's mirroring on the layers that play the paper's hidden layer.

Draws come from one CPU generator seeded with the job's seed, in the modules' registration order, so the same
spec gives the same initial weights on any device.
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def lecun_init_(model: nn.Module, seed: int) -> None:
    """Weights of Linear/Conv layers ~ N(0, 1/fan_in); biases 0; BatchNorm scale 1, shift 0."""
    g = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            w = module.weight
            fan_in = w[0].numel()
            w.copy_(torch.randn(w.shape, generator=g, dtype=torch.float32) / fan_in**0.5)
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.BatchNorm2d):
            module.reset_parameters()


@torch.no_grad()
def mirror_output_channels_(module: nn.Module) -> None:
    """Algorithm 1 on one layer: copy the first half of its output units onto the second half.

    Every parameter and buffer indexed by output unit is copied (weights, biases, BatchNorm scale/shift and running
    statistics), so unit j + m/2 computes exactly what unit j computes, for any input whose own pairs are equal.
    """
    tensors = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
    for t in tensors:
        if t.dim() == 0:  # num_batches_tracked
            continue
        m = t.shape[0]
        if m % 2:
            raise ValueError(f"mirrored init needs an even number of output units, got {m}")
        t[m // 2:].copy_(t[: m // 2])


def mirror_block_(block: nn.Module) -> None:
    """Mirror every layer of a block: each conv, BatchNorm and shortcut layer (appendix H.1)."""
    for module in block.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.BatchNorm2d)):
            mirror_output_channels_(module)
