"""Whether a spec's model fits its data's shapes: the checks a run makes once its data is loaded.

Torch-free, so the service's plan (POST /v1/plan) makes the very checks the worker will, before anything is queued.
"""

from __future__ import annotations

import math

from trainer.data.errors import DataError
from trainer.spec import (
    MAX_MLP_PARAMS,
    MAX_RESNET_CHANNELS,
    MAX_RESNET_PIXELS,
    MAX_SHALLOW_PARAMS,
    JobSpec,
    MLPModel,
    ResNet18Model,
    ShallowModel,
    mlp_weight_count,
)


def check_loss_fits(spec: JobSpec, classification: bool) -> None:
    if spec.loss == "cross_entropy" and not classification:
        raise DataError("loss", "cross_entropy needs integer class labels; this data is regression")


def check_model_fits(spec: JobSpec, input_shape: tuple[int, ...], out_features: int) -> None:
    """Raise DataError naming the spec field when data of one-sample shape `input_shape` (and `out_features` classes
    or outputs) cannot train this spec's model."""
    d = math.prod(input_shape)
    match spec.model:
        case ShallowModel(width=width):
            if width * d > MAX_SHALLOW_PARAMS:
                raise DataError("model.width", f"width x input dim = {width * d} > {MAX_SHALLOW_PARAMS}")
        case MLPModel(hidden=hidden):
            count = mlp_weight_count(d, list(hidden), out_features)
            if count > MAX_MLP_PARAMS:
                raise DataError("model.hidden", f"{count} weights for input dim {d}; at most {MAX_MLP_PARAMS}")
        case ResNet18Model():
            if len(input_shape) != 3:
                raise DataError("model.arch", f"resnet18 needs image data (n, C, H, W); this data set is tabular, "
                                              f"samples of shape {input_shape}")
            channels, height, width_px = input_shape
            if channels > MAX_RESNET_CHANNELS:
                raise DataError("model.arch", f"resnet18 takes at most {MAX_RESNET_CHANNELS} input channels, "
                                              f"got {channels}")
            if height * width_px > MAX_RESNET_PIXELS:
                raise DataError("model.arch", f"resnet18 takes images of at most {MAX_RESNET_PIXELS} pixels, "
                                              f"got {height}x{width_px}")
