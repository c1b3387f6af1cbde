"""How many CPU threads a run should use, from the size of one training step.

torch's CPU kernels split every op over OpenMP threads, and each split costs a fork/join of tens of
microseconds. A small net's step is ~20 ops of a few microseconds each, so on 2 threads it spends most of its
time synchronising: 2,000 steps of a width-40 net on 200 samples took 4x longer on 2 threads than on 1
(bench/bench_threads.py). Threads pay only once a step's matmuls are big.
"""

from __future__ import annotations

import math

from trainer.spec import JobSpec, MLPModel, ShallowModel

# Below this many multiply-adds per step a second thread costs more than it saves (bench/bench_threads.py).
SMALL_STEP_MACS = 20_000_000


def step_macs(spec: JobSpec, n_train: int, input_dim: int, outputs: int, configs: int = 1) -> float:
    """Multiply-adds of one forward + backward step, roughly (3x the forward's)."""
    rows = min(spec.optim.batch_size or n_train, n_train)
    model = spec.model
    if isinstance(model, ShallowModel):
        per_row = model.width * (input_dim + outputs)
    elif isinstance(model, MLPModel):
        widths = [input_dim, *model.hidden, outputs]
        per_row = sum(a * b for a, b in zip(widths[:-1], widths[1:], strict=True))
    else:  # ResNet-18: hundreds of millions per image, always worth every core
        return math.inf
    return 3.0 * configs * rows * per_row


def threads_for(macs_per_step: float, cores: int) -> int:
    """1 thread for small steps, every core for big ones."""
    return 1 if macs_per_step < SMALL_STEP_MACS else max(1, cores)
