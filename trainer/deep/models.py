"""Build a deep net from a job spec and the loaded data's shapes, with the spec's regime and initialization."""

from __future__ import annotations

import math

import torch
from torch import nn

from trainer.deep.mlp import MLP
from trainer.deep.resnet import ResNet18
from trainer.fit import check_model_fits
from trainer.sizes import IMAGENET_STEM_MIN_SIZE
from trainer.spec import JobSpec, MLPModel, ResNet18Model

DeepNet = MLP | ResNet18


def build_model(spec: JobSpec, input_shape: tuple[int, ...], out_features: int) -> DeepNet:
    """A freshly initialized net for the spec (LeCun, plus the mirrored block in the constrained regime).

    input_shape: one sample's shape, (d,) or (C, H, W). Raises DataError naming the spec field when the data does
    not fit the architecture.
    """
    model: DeepNet
    pairwise = spec.regime == "constrained"
    check_model_fits(spec, input_shape, out_features)
    match spec.model:
        case MLPModel(hidden=hidden, activation=activation):
            model = MLP(math.prod(input_shape), list(hidden), out_features, activation, pairwise)
        case ResNet18Model(block4_width=width):
            channels, height, width_px = input_shape
            imagenet_stem = min(height, width_px) >= IMAGENET_STEM_MIN_SIZE
            model = ResNet18(channels, out_features, width, pairwise, imagenet_stem)
        case _:
            raise TypeError(f"model.arch {spec.model.arch!r} is not a deep net")
    model.initialize_(spec.seed)
    return model


def model_for_tensors(spec: JobSpec, tensors: dict[str, torch.Tensor]) -> DeepNet:
    """The architecture a checkpoint's `model.*` tensors were saved from (input size and classes from shapes)."""
    if isinstance(spec.model, MLPModel):
        first = "model.body.0.weight" if len(spec.model.hidden) > 1 else "model.last.weight"
        input_shape: tuple[int, ...] = (tensors[first].shape[1],)
    else:
        stem = tensors["model.stem.0.weight"]  # (64, C, k, k): k = 7 for the ImageNet stem
        size = IMAGENET_STEM_MIN_SIZE if stem.shape[-1] == 7 else 32
        input_shape = (stem.shape[1], size, size)
    model = build_model(spec, input_shape, tensors["model.out.weight"].shape[0])
    return model


def named_block_parameters(model: nn.Module, block: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The projected block's parameters with their names in the full model (the order of block.parameters())."""
    ids = {id(p) for p in block.parameters()}
    return [(name, p) for name, p in model.named_parameters() if id(p) in ids]
