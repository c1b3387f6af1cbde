"""What a job costs, counted from its spec and data shape: parameters, FLOPs, memory and checkpoint bytes."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, Field

from trainer.checkpoint_format import KEEP_LATEST, header_metadata, safetensors_bytes
from trainer.plan.layers import Net, TensorInfo
from trainer.plan.shapes import DataShape
from trainer.sizes import EVAL_BATCH, JACOBIAN_MAX_SAMPLES
from trainer.spec import JobSpec, ShallowModel
from trainer.steps import metric_records, rows_per_step, total_steps

Device = Literal["cpu", "cuda"]
FLOPS_COUNTED_AS = ("2 FLOPs per multiply-add of the matmuls and convolutions; a training step's backward pass as "
                    "twice its forward; elementwise ops, BatchNorm and the projections not counted")


# -------------------------------------------------------------------------------------------- parameters
class ParameterCounts(BaseModel):
    total: int = Field(description="trainable parameters")
    hidden_layer: int = Field(description="parameters of the layer or block playing the paper's W")
    outer: int = Field(description="trainable parameters of the output layer (v, and a bias for deep nets)")
    constrained: int = Field(description="parameters a projection of problem (10) acts on: the hidden layer when "
                                         "a radius is set, v when zeta or gamma is")
    buffers: int = Field(description="non-trainable state (BatchNorm running statistics)")


def parameter_counts(spec: JobSpec, net: Net) -> ParameterCounts:
    hidden = sum(t.numel for t in net.block_params)
    v = net.outer_params[0].numel
    c = spec.constraint
    constrained = (hidden if c.radius is not None else 0) + (v if c.zeta is not None or c.gamma is not None else 0)
    return ParameterCounts(total=sum(t.numel for t in net.params), hidden_layer=hidden,
                           outer=sum(t.numel for t in net.outer_params), constrained=constrained,
                           buffers=sum(t.numel for t in net.buffers))


# ------------------------------------------------------------------------------------------------ FLOPs
class ComputeCost(BaseModel):
    steps: int
    rows_per_step: float = Field(description="samples per step (the batch; the last short batch averaged in)")
    flops_per_step: float = Field(description="one training step: forward and backward")
    evaluations: int = Field(description="metric records: a forward pass over the training and test sets each")
    flops_per_evaluation: float
    flops_per_run: float = Field(description="every step plus every evaluation (and the Jacobian metric)")
    counted_as: str = FLOPS_COUNTED_AS


def _jacobian_flops(spec: JobSpec, shape: DataShape, net: Net) -> float:
    """The Jacobian's smallest singular value (shallow, one output): J J^T as an n x n Gram matrix, then eigvalsh."""
    n, d, m = shape.n_train, shape.input_dim, net.hidden_units
    if not isinstance(spec.model, ShallowModel) or shape.outputs != 1 or n > JACOBIAN_MAX_SAMPLES:
        return 0.0
    return 2.0 * (n * m * d + n * n * d + n * n * m) + 4.0 / 3.0 * n**3


def _jacobian_records(spec: JobSpec, total: int, start: int, end: int) -> int:
    # At the last step, and at records on multiples of jacobian_every (records come every metrics_every steps).
    count = 1 if start < total <= end else 0
    if spec.jacobian_every is not None:
        every = spec.jacobian_every * spec.metrics_every // math.gcd(spec.jacobian_every, spec.metrics_every)
        count += end // every - start // every - (1 if start < total <= end and total % every == 0 else 0)
    return count


def flops_between(spec: JobSpec, shape: DataShape, net: Net, start: int, end: int) -> float:
    """FLOPs of the run's steps start+1..end and the evaluations among them (step 0's when start == 0)."""
    n = shape.n_train
    step = 3 * 2.0 * net.macs * rows_per_step(spec, n)
    evaluation = 2.0 * net.macs * (shape.n_train + shape.n_test)
    jacobian = _jacobian_flops(spec, shape, net) * _jacobian_records(spec, total_steps(spec, n), start, end)
    return (end - start) * step + metric_records(spec, n, start, end) * evaluation + jacobian


def compute_cost(spec: JobSpec, shape: DataShape, net: Net) -> ComputeCost:
    n = shape.n_train
    steps = total_steps(spec, n)
    rows = rows_per_step(spec, n)
    return ComputeCost(steps=steps, rows_per_step=rows, flops_per_step=3 * 2.0 * net.macs * rows,
                       evaluations=metric_records(spec, n, 0, steps),
                       flops_per_evaluation=2.0 * net.macs * (shape.n_train + shape.n_test),
                       flops_per_run=flops_between(spec, shape, net, 0, steps))


# ----------------------------------------------------------------------------------------------- memory
class MemoryEstimate(BaseModel):
    device: Device
    parameters: int
    gradients: int
    optimizer_state: int
    initial_copies: int = Field(description="W0 (the ball's centre) and the projection's scratch space")
    buffers: int
    activations: int = Field(description="the larger of a training step's and an evaluation's")
    data_on_device: int = Field(description="shallow nets keep the data set on the device; deep nets one batch "
                                            "(all of it when the device is the CPU)")
    total: int = Field(description="peak bytes on the device, an estimate (allocator overhead, the CUDA context "
                                   "and library workspaces not counted)")
    host_data: int = Field(description="the loaded data set in host memory (float32 inputs and targets)")


def _optimizer_tensors(spec: JobSpec) -> list[str]:
    if spec.optim.name == "adam":
        return ["exp_avg", "exp_avg_sq"]
    return ["momentum"] if spec.optim.momentum > 0 else []


def _data_bytes(spec: JobSpec, shape: DataShape, samples: float) -> int:
    # float32 inputs; regression targets and one-hot targets (square loss) as float32, class labels as int64.
    targets = 4 * shape.outputs if spec.loss == "square" else 0
    labels = 8 if shape.task == "classification" else 0
    return int(samples * (4 * shape.input_dim + targets + labels))


def _activation_bytes(spec: JobSpec, shape: DataShape, net: Net, device: Device) -> int:
    rows = rows_per_step(spec, shape.n_train)
    n = max(shape.n_train, shape.n_test)
    m = net.hidden_units
    if isinstance(spec.model, ShallowModel):
        # The hand-written step keeps ~3 (regular) or ~2 (pairwise) m x rows buffers; evaluation ~3 m x n.
        train = (2 if spec.regime == "constrained" else 3) * m * rows * 4
        evaluation = 3 * m * n * 4
        jacobian = 0.0
        if _jacobian_flops(spec, shape, net):
            jacobian = 8 * (4 * shape.n_train * m + 3 * shape.n_train**2)  # float64 H, S, Su, ... and Gram matrices
        return int(max(train, evaluation, jacobian))
    per_value = 2 if spec.precision == "bf16" and device == "cuda" else 4
    train = rows * net.activations * per_value
    widest = max(layer.outputs for layer in net.layers)
    evaluation = min(EVAL_BATCH[spec.model.arch], n) * 2 * widest * per_value  # no_grad: two layers alive at once
    return int(max(train, evaluation))


def memory_estimate(spec: JobSpec, shape: DataShape, net: Net, device: Device) -> MemoryEstimate:
    params = sum(t.nbytes for t in net.params)
    block = sum(t.nbytes for t in net.block_params)
    optimizer = params * len(_optimizer_tensors(spec))
    # W0 is always kept (w_dist); deep nets also keep a scratch copy of the block to project onto the ball.
    deep_scratch = block if spec.constraint.radius is not None and not isinstance(spec.model, ShallowModel) else 0
    initial = block + deep_scratch
    buffers = sum(t.nbytes for t in net.buffers)
    activations = _activation_bytes(spec, shape, net, device)
    host = _data_bytes(spec, shape, shape.n_train + shape.n_test)
    if isinstance(spec.model, ShallowModel) or device == "cpu":
        on_device = host
    else:  # deep nets on a GPU: data stays on the host, one batch at a time is copied over
        on_device = _data_bytes(spec, shape, rows_per_step(spec, shape.n_train))
    total = params * 2 + optimizer + initial + buffers + activations + on_device  # x2: the gradients
    return MemoryEstimate(device=device, parameters=params, gradients=params, optimizer_state=optimizer,
                          initial_copies=initial, buffers=buffers, activations=activations, data_on_device=on_device,
                          total=total, host_data=host)


# ----------------------------------------------------------------------------------------- checkpoints
class CheckpointEstimate(BaseModel):
    bytes: int = Field(description="one checkpoint's .safetensors file (its metadata JSON is a few KB more)")
    tensors: int
    written: int = Field(description="checkpoints the run writes: every checkpoint_every steps, and the final one")
    kept_on_disk: int = Field(description=f"bytes on disk at most: the latest {KEEP_LATEST} are kept")


def checkpoint_tensors(spec: JobSpec, shape: DataShape, net: Net) -> list[TensorInfo]:
    """The tensors trainer.loop writes: the learner's state_tensors() plus the standardization statistics."""
    stats_shape = (shape.input_dim,) if len(shape.sample_shape) == 1 else (shape.sample_shape[0], 1, 1)
    stats = [TensorInfo("x_mean", stats_shape), TensorInfo("x_std", stats_shape)]
    opt = _optimizer_tensors(spec)
    if isinstance(spec.model, ShallowModel):
        W, v = net.params
        state = [W, v, TensorInfo("W0", W.shape)]
        return [*state, *(TensorInfo(f"opt.{t.name}.{key}", t.shape) for t in (W, v) for key in opt), *stats]
    # torch.optim's names: SGD keeps momentum_buffer (when momentum > 0), Adam a 0-d step and two moments.
    torch_keys = {"momentum": ["momentum_buffer"], "exp_avg": ["exp_avg"], "exp_avg_sq": ["exp_avg_sq"]}
    keys = [k for key in opt for k in torch_keys[key]]
    optimizer = [TensorInfo(f"opt.{t.name}.{key}", t.shape) for t in net.params for key in keys]
    if spec.optim.name == "adam":
        optimizer += [TensorInfo(f"opt.{t.name}.step", ()) for t in net.params]
    model = [TensorInfo(f"model.{t.name}", t.shape, t.dtype) for t in (*net.params, *net.buffers)]
    init = [TensorInfo(f"init.{t.name}", t.shape) for t in net.block_params]
    return [*model, *init, *optimizer, *stats]


def checkpoint_estimate(spec: JobSpec, shape: DataShape, net: Net) -> CheckpointEstimate:
    steps = total_steps(spec, shape.n_train)
    tensors = checkpoint_tensors(spec, shape, net)
    size = safetensors_bytes([(t.name, t.shape, t.dtype) for t in tensors], header_metadata(steps))
    every = spec.checkpoint_every
    written = 1 + ((steps - 1) // every if every else 0)
    return CheckpointEstimate(bytes=size, tensors=len(tensors), written=written,
                              kept_on_disk=size * min(written, KEEP_LATEST))
