"""Expected GPU time of a reproduction's full runs: throughput measured here, scaled by a stated assumption.

The measurement runs the trainer's own step (trainer.loop.make_learner: the learner a job uses) on random data of the
run's shapes: the FLOPs of one training step and of evaluating one sample are counted by
torch.utils.flop_counter (matmuls and convolutions, forward and backward), and one step is timed on this device.
A run costs  epochs x (steps_per_epoch x step + (n_train + n_test) x eval_per_sample),  since the loop evaluates the
whole training and test sets at every epoch end.

The GPU is not measured (no GPU was lent to the task that wrote this); the assumption is a sustained rate R for the
workload's FLOPs plus a fixed overhead o per training step (kernel launches, the host-side batch gather and copy):
    GPU time = epochs x (steps_per_epoch x (step_flops / R + o) + n_eval x eval_flops / R).
With a CUDA device, pass --device cuda to the script's --estimate and the measured step replaces the assumption.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from trainer.data import Dataset
from trainer.loop import make_learner
from trainer.shallow.learner import ConfigGrid
from trainer.spec import JobSpec


@dataclass(frozen=True)
class Assumption:
    device: str
    sustained_tflops: float  # R
    step_overhead_ms: float  # o
    why: str


ASSUMPTIONS = {
    "resnet18": Assumption(
        "one NVIDIA H200, bf16 autocast, channels_last", 40.0, 3.0,
        "R = 40 TFLOP/s is ~4% of the H200's ~990 TFLOP/s dense bf16 peak: at batch 128 the late blocks work on 8x8 "
        "and 4x4 maps and eager PyTorch launches ~200 small kernels per step; o = 3 ms per step for those launches, "
        "the host-side batch gather, pinned copy and the augmentation's index ops"),
    "shallow": Assumption(
        "one NVIDIA H200, fp32 (no TF32)", 20.0, 0.5,
        "R = 20 TFLOP/s is ~30% of the H200's ~67 TFLOP/s fp32 peak for (128 x 3072) x (3072 x m) matmuls; "
        "o = 0.5 ms per step for ~30 kernel launches and the per-epoch shuffle"),
}


@dataclass(frozen=True)
class Throughput:
    device: str
    threads: int
    step_seconds: float  # one training step, measured
    step_flops: float  # counted
    eval_flops_per_sample: float  # counted

    @property
    def tflops(self) -> float:
        return self.step_flops / self.step_seconds / 1e12


def random_dataset(input_shape: tuple[int, ...], classes: int, n_train: int, n_test: int) -> Dataset:
    g = torch.Generator().manual_seed(0)
    X = torch.randn(n_train + n_test, *input_shape, generator=g)
    y = torch.randint(0, classes, (n_train + n_test,), generator=g)
    zeros = torch.zeros(input_shape[0], *([1] * (len(input_shape) - 1)))
    return Dataset(X_train=X[:n_train], y_train=y[:n_train], X_test=X[n_train:], y_test=y[n_train:],
                   task="classification", num_classes=classes, x_mean=zeros, x_std=zeros + 1)


def measure(spec: JobSpec, input_shape: tuple[int, ...], classes: int, device: torch.device,
            timed_steps: int = 2) -> Throughput:
    """Count and time the training step of `spec`'s learner on random data of the run's shapes."""
    batch = spec.optim.batch_size or 1
    data = random_dataset(input_shape, classes, n_train=2 * batch, n_test=batch)
    learner = make_learner(spec, data, ConfigGrid.single(spec), device)
    with FlopCounterMode(display=False) as counter:
        learner.step(0)
    step_flops = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        learner.evaluate()
    eval_flops = counter.get_total_flops() / (data.n_train + data.n_test)
    learner.step(1)  # warm-up: allocator, kernel selection
    sync(device)
    start = time.perf_counter()
    for i in range(timed_steps):
        learner.step(2 + i)
    sync(device)
    seconds = (time.perf_counter() - start) / timed_steps
    return Throughput(str(device), torch.get_num_threads(), seconds, step_flops, eval_flops)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_seconds(tp: Throughput, steps_per_epoch: int, epochs: int, n_eval: int,
                assumption: Assumption | None) -> dict[str, float]:
    """Time of one full run: as measured on tp's device, and on the assumed GPU."""
    measured_rate = tp.step_flops / tp.step_seconds
    measured = epochs * (steps_per_epoch * tp.step_seconds + n_eval * tp.eval_flops_per_sample / measured_rate)
    out = {"measured_device_seconds": measured}
    if assumption is not None:
        rate = assumption.sustained_tflops * 1e12
        out["assumed_gpu_seconds"] = epochs * (
            steps_per_epoch * (tp.step_flops / rate + assumption.step_overhead_ms / 1e3)
            + n_eval * tp.eval_flops_per_sample / rate)
        out["speedup_over_measured"] = measured / out["assumed_gpu_seconds"]
    return out


def as_dict(tp: Throughput) -> dict[str, float | str | int]:
    return {**asdict(tp), "measured_tflops": tp.tflops}
