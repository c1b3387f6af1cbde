"""ResNet-18 with a configurable 4th block, in the paper's two regimes (appendix H).

Stem: CIFAR-style (3x3 conv, stride 1, no max-pool) for inputs below 64 pixels, ImageNet-style (7x7 conv stride 2,
3x3 max-pool) from 64 up; any number of input channels. Blocks 1-3 are standard (64, 128, 256 channels); block 4
has `block4_width` channels (512 in the standard net).

Constrained regime. Block 4 plays the paper's hidden layer W and the output layer its pairwise outer layer:
- the architecture of block 4 is unchanged (the same convs, BatchNorms and shortcut as the regular net, every
  layer still fully connected across all of its input channels), so both regimes have the same parameters there;
- Algorithm 1 is applied to every layer of block 4 (appendix H.1: "repeat the code lines for every hidden layer,
  including the BatchNorm layer and the CNNs in the shortcut layers"): each layer's output channels c and
  c + w/2 start equal (weights, BatchNorm scale/shift and running statistics). By induction over the layers, every
  feature map of block 4 then comes in equal pairs, whatever the input;
- the output layer is pairwise (9): f = V (p_1 - p_2) + c, with p_1, p_2 the two halves of the pooled block-4
  features and V (k, w/2) the only free outer weights (U = [V, -V]). At init p_1 = p_2, so f = 0 exactly.
This mirrors the shallow construction channel for channel: a channel of block 4 is a "neuron" w_j, the halves are
equal only at init, and all w channels move freely (within the ball) afterwards.

Exactness: in the constrained net each block-4 layer computes its two output halves with two calls of identical
shapes on the same input (PairedConv2d, PairedBatchNorm2d, and the pooled halves), so equal halves give bitwise
equal outputs and the initial output is exactly 0 (tested on CPU), not ~1e-7 from a kernel's channel tiling.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainer.deep.init import lecun_init_, mirror_block_


class PairedConv2d(nn.Conv2d):
    """nn.Conv2d whose two halves of output channels are computed by two identically shaped calls."""

    def forward(self, x: Tensor) -> Tensor:
        h = self.out_channels // 2
        return torch.cat((self._conv_forward(x, self.weight[:h], None),
                          self._conv_forward(x, self.weight[h:], None)), dim=1)


class PairedBatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d (same parameters, buffers and update rule) applied to the two channel halves separately."""

    def forward(self, x: Tensor) -> Tensor:
        mean, var, tracked, momentum = self.running_mean, self.running_var, self.num_batches_tracked, self.momentum
        if mean is None or var is None or tracked is None or momentum is None:
            raise ValueError("PairedBatchNorm2d keeps running statistics with a fixed momentum")
        if self.training:
            tracked.add_(1)
        h = self.num_features // 2
        halves = []
        for s in (slice(0, h), slice(h, None)):
            # Views of the running buffers: batch_norm updates them in place, so the module's buffers move.
            halves.append(F.batch_norm(x[:, s], mean[s], var[s], self.weight[s], self.bias[s], self.training,
                                       momentum, self.eps))
        return torch.cat(halves, dim=1)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, paired: bool = False) -> None:
        super().__init__()
        conv, bn = (PairedConv2d, PairedBatchNorm2d) if paired else (nn.Conv2d, nn.BatchNorm2d)
        self.conv1 = conv(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = bn(cout)
        self.conv2 = conv(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = bn(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(conv(cin, cout, 1, stride, bias=False), bn(cout))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def _stage(cin: int, cout: int, stride: int, paired: bool = False) -> nn.Sequential:
    return nn.Sequential(BasicBlock(cin, cout, stride, paired), BasicBlock(cout, cout, 1, paired))


class ResNet18(nn.Module):
    def __init__(self, in_channels: int, out_features: int, block4_width: int, pairwise: bool,
                 imagenet_stem: bool) -> None:
        super().__init__()
        if imagenet_stem:
            self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                                      nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        else:
            self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        self.layer1 = _stage(64, 64, 1)
        self.layer2 = _stage(64, 128, 2)
        self.layer3 = _stage(128, 256, 2)
        self.layer4 = _stage(256, block4_width, 2, paired=pairwise)
        self.pairwise = pairwise
        self.out = nn.Linear(block4_width // 2 if pairwise else block4_width, out_features)

    def features(self, x: Tensor) -> Tensor:
        out = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        if not self.pairwise:
            return out.mean(dim=(2, 3))
        h = out.shape[1] // 2
        return out[:, :h].mean(dim=(2, 3)) - out[:, h:].mean(dim=(2, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.features(x))

    def projected_block(self) -> nn.Module:
        return self.layer4

    @torch.no_grad()
    def initialize_(self, seed: int) -> None:
        lecun_init_(self, seed)
        if self.pairwise:
            mirror_block_(self.layer4)
            self.out.weight.mul_(0.5**0.5)  # v ~ N(0, 1/w): LeCun drew it with fan-in w/2
