"""The nets of trainer/shallow and trainer/deep, described layer by layer without building them (no torch).

Each layer lists its tensors (named as in the model's state_dict), its multiply-adds per sample and the elements of
its outputs per sample. Counting parameters, FLOPs, memory and checkpoint bytes is then arithmetic over this list;
tests/trainer/test_plan_counts.py holds the names and shapes to the real modules'.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from trainer.plan.shapes import DataShape
from trainer.sizes import IMAGENET_STEM_MIN_SIZE
from trainer.spec import JobSpec, MLPModel, ResNet18Model, ShallowModel


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    dtype: str = "F32"  # safetensors' name for the dtype

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * (8 if self.dtype in ("I64", "F64") else 4)


@dataclass
class Layer:
    params: list[TensorInfo] = field(default_factory=list)  # trainable
    buffers: list[TensorInfo] = field(default_factory=list)  # BatchNorm running statistics
    macs: int = 0  # multiply-adds of the forward pass, per sample
    outputs: int = 0  # elements of the layer's outputs, per sample (what autograd keeps for the backward)
    in_block: bool = False  # part of the paper's hidden layer W: the block the ball (10) bounds


@dataclass(frozen=True)
class Net:
    layers: list[Layer]
    # Where the paper's hidden layer sits: d = its input features, m = its units (spatial positions counted).
    hidden_units: int
    hidden_inputs: int
    counted_as: str

    @property
    def params(self) -> list[TensorInfo]:
        return [t for layer in self.layers for t in layer.params]

    @property
    def buffers(self) -> list[TensorInfo]:
        return [t for layer in self.layers for t in layer.buffers]

    @property
    def block_params(self) -> list[TensorInfo]:
        return [t for layer in self.layers if layer.in_block for t in layer.params]

    @property
    def outer_params(self) -> list[TensorInfo]:
        return self.layers[-1].params

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def activations(self) -> int:
        return sum(layer.outputs for layer in self.layers)


def describe(spec: JobSpec, shape: DataShape) -> Net:
    """The layers of the net `spec` builds for data of this shape."""
    pairwise = spec.regime == "constrained"
    k = shape.outputs
    model = spec.model
    if isinstance(model, ShallowModel):
        return _shallow(model.width, shape.input_dim, k, pairwise)
    if isinstance(model, MLPModel):
        return _mlp(shape.input_dim, list(model.hidden), k, pairwise)
    if isinstance(model, ResNet18Model):
        return _resnet18(shape.sample_shape, model.block4_width, k, pairwise)
    raise TypeError(f"unknown arch {spec.model.arch!r}")


def _linear(name: str, fan_in: int, fan_out: int, *, bias: bool = True, in_block: bool = False) -> Layer:
    params = [TensorInfo(f"{name}.weight", (fan_out, fan_in))]
    if bias:
        params.append(TensorInfo(f"{name}.bias", (fan_out,)))
    return Layer(params, macs=fan_in * fan_out, outputs=fan_out, in_block=in_block)


def _shallow(m: int, d: int, k: int, pairwise: bool) -> Net:
    # Network (1) / (9): no biases; the pairwise outer layer has m/2 free rows (u = [v; -v]).
    p = m // 2 if pairwise else m
    hidden = Layer([TensorInfo("W", (m, d))], macs=m * d, outputs=2 * m, in_block=True)  # pre-activation, activation
    outer = Layer([TensorInfo("v", (p, k))], macs=p * k, outputs=k)
    return Net([hidden, outer], m, d, "m = the hidden width; d = the input dimension (an image's C x H x W)")


def _mlp(d: int, hidden: list[int], k: int, pairwise: bool) -> Net:
    widths = [d, *hidden]
    layers = []
    for i, (a, b) in enumerate(zip(widths[:-2], widths[1:-1], strict=True)):
        layer = _linear(f"body.{2 * i}", a, b)
        layer.outputs = 2 * b  # Linear, then the activation
        layers.append(layer)
    m = widths[-1]
    last = _linear("last", widths[-2], m, in_block=True)
    last.outputs = 2 * m + (m // 2 if pairwise else 0)  # pre-activation, activation, the pairwise difference
    layers.append(last)
    layers.append(_linear("out", m // 2 if pairwise else m, k))
    source = "the previous hidden layer's width" if len(hidden) > 1 else "the input dimension"
    return Net(layers, m, widths[-2],
               f"m = the last hidden layer's width; d = {source}: the layers below are a feature map and the last "
               "hidden layer plays the 1-hidden-layer net's W (appendix G)")


def _conv_out(size: int, stride: int) -> int:
    # 3x3 pad 1, 1x1 pad 0, 7x7 pad 3 and the 3x3 max-pool pad 1 all give floor((size - 1) / stride) + 1.
    return (size - 1) // stride + 1


def _conv(name: str, cin: int, cout: int, kernel: int, stride: int, hw: tuple[int, int],
          in_block: bool) -> tuple[Layer, tuple[int, int]]:
    h, w = (_conv_out(hw[0], stride), _conv_out(hw[1], stride))
    layer = Layer([TensorInfo(f"{name}.weight", (cout, cin, kernel, kernel))], macs=cout * h * w * cin * kernel**2,
                  outputs=cout * h * w, in_block=in_block)
    return layer, (h, w)


def _batchnorm(name: str, c: int, hw: tuple[int, int], in_block: bool, relu: bool) -> Layer:
    return Layer([TensorInfo(f"{name}.weight", (c,)), TensorInfo(f"{name}.bias", (c,))],
                 [TensorInfo(f"{name}.running_mean", (c,)), TensorInfo(f"{name}.running_var", (c,)),
                  TensorInfo(f"{name}.num_batches_tracked", (), "I64")],
                 outputs=c * hw[0] * hw[1] * (2 if relu else 1), in_block=in_block)


def _basic_block(name: str, cin: int, cout: int, stride: int, hw: tuple[int, int],
                 in_block: bool) -> tuple[list[Layer], tuple[int, int]]:
    conv1, out_hw = _conv(f"{name}.conv1", cin, cout, 3, stride, hw, in_block)
    conv2, _ = _conv(f"{name}.conv2", cout, cout, 3, 1, out_hw, in_block)
    layers = [conv1, _batchnorm(f"{name}.bn1", cout, out_hw, in_block, relu=True),
              conv2, _batchnorm(f"{name}.bn2", cout, out_hw, in_block, relu=True)]  # bn2: + shortcut, then ReLU
    if stride != 1 or cin != cout:
        shortcut, _ = _conv(f"{name}.shortcut.0", cin, cout, 1, stride, hw, in_block)
        layers += [shortcut, _batchnorm(f"{name}.shortcut.1", cout, out_hw, in_block, relu=False)]
    return layers, out_hw


def _resnet18(sample: tuple[int, ...], width: int, k: int, pairwise: bool) -> Net:
    if len(sample) != 3:
        raise ValueError(f"model.arch: resnet18 needs image data (C, H, W); samples here have shape {sample}")
    channels, *hw_in = sample
    hw = (hw_in[0], hw_in[1])
    imagenet = min(hw) >= IMAGENET_STEM_MIN_SIZE
    stem, hw = _conv("stem.0", channels, 64, 7 if imagenet else 3, 2 if imagenet else 1, hw, False)
    layers = [stem, _batchnorm("stem.1", 64, hw, False, relu=True)]
    if imagenet:
        hw = (_conv_out(hw[0], 2), _conv_out(hw[1], 2))  # 3x3 max-pool, stride 2
        layers[-1].outputs += 64 * hw[0] * hw[1]
    cin = 64
    block3_hw = hw
    for stage, (cout, stride) in enumerate(((64, 1), (128, 2), (256, 2), (width, 2)), start=1):
        for i in range(2):
            block, hw = _basic_block(f"layer{stage}.{i}", cin, cout, stride if i == 0 else 1, hw, stage == 4)
            layers += block
            cin = cout
        if stage == 3:
            block3_hw = hw
    outer = _linear("out", width // 2 if pairwise else width, k)
    layers.append(outer)
    positions = hw[0] * hw[1]
    counted = (f"m = block 4's {width} channels x its {hw[0]}x{hw[1]} = {positions} spatial positions; d = block 3's "
               f"256 channels x {block3_hw[0]}x{block3_hw[1]} positions (block 4's input): each channel at each "
               "position is one unit, a conv layer being the same neuron applied at every position")
    return Net(layers, width * positions, 256 * block3_hw[0] * block3_hw[1], counted)
