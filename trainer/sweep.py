"""Sweeps: a grid over learning rates, radii and seeds trained as ONE vectorized program.

The grid becomes the leading config dimension of every tensor (trainer/shallow/learner.py), so 49 learning-rate pairs
cost one batched matmul per layer per step instead of 49 Python-level training loops.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

import torch
from pydantic import Field, model_validator

from trainer.data import Dataset, load_data
from trainer.loop import _floats, resolve_device
from trainer.shallow.learner import ConfigGrid, ShallowLearner
from trainer.spec import JobSpec, LearningRate, PositiveFinite, Seed, ShallowModel, StrictModel

MAX_CONFIGS = 4096
# Configs are run in chunks so that one chunk's (C, n, m) activations stay around this many floats.
CHUNK_ELEMENTS = 16_000_000


class SweepSpec(StrictModel):
    """A base job and the values to sweep; an absent list keeps the base job's value."""

    base: JobSpec
    lr_hidden: list[LearningRate] | None = Field(default=None, min_length=1, max_length=64)
    lr_outer: list[LearningRate] | None = Field(default=None, min_length=1, max_length=64)
    radius: list[Annotated[PositiveFinite | None, Field()]] | None = Field(default=None, min_length=1, max_length=64)
    seed: list[Seed] | None = Field(default=None, min_length=1, max_length=256)

    @model_validator(mode="after")
    def _check(self) -> SweepSpec:
        if not isinstance(self.base.model, ShallowModel):
            raise ValueError("base.model.arch: sweeps are vectorized for arch 'shallow' only")
        if len(self.configs()) > MAX_CONFIGS:
            raise ValueError(f"lr_hidden: the grid has {len(self.configs())} configs, more than {MAX_CONFIGS}")
        return self

    def configs(self) -> list[tuple[float, float, float, int]]:
        """(lr_hidden, lr_outer, radius, seed) for every grid point, in a fixed order."""
        b = self.base
        radii = [math.inf if r is None else r for r in self.radius] if self.radius else [b.radius]
        return list(itertools.product(self.lr_hidden or [b.optim.hidden_lr], self.lr_outer or [b.optim.outer_lr],
                                      radii, self.seed or [b.seed]))

    def config_spec(self, index: int) -> JobSpec:
        """The single job equivalent to grid point `index`."""
        lr_h, lr_o, r, seed = self.configs()[index]
        optim = self.base.optim.model_copy(update={"lr": None, "lr_hidden": lr_h, "lr_outer": lr_o})
        constraint = self.base.constraint.model_copy(update={"radius": None if math.isinf(r) else r})
        return self.base.model_copy(update={"optim": optim, "constraint": constraint, "seed": seed})


@dataclass
class SweepResult:
    configs: list[tuple[float, float, float, int]]
    final: list[dict[str, float]]  # per config: metrics at the last step
    best_train_loss: list[float]  # per config: lowest recorded training loss (NaN-safe: inf when diverged)
    history: list[list[dict[str, float]]]  # per config: every recorded step
    weights: list[torch.Tensor]  # per config: final W (kept for checks and reuse)


def _chunk_size(sweep: SweepSpec, data: Dataset) -> int:
    model = sweep.base.model
    if not isinstance(model, ShallowModel):
        raise TypeError("sweeps are vectorized for arch 'shallow' only")
    width = model.width
    rows = sweep.base.optim.batch_size or data.n_train
    return max(1, CHUNK_ELEMENTS // max(1, rows * width))


def run_sweep(sweep: SweepSpec, *, data: Dataset | None = None, device: torch.device | None = None,
              on_chunk: Callable[[int, int], None] | None = None) -> SweepResult:
    base = sweep.base
    data = data if data is not None else load_data(base.data)
    device = device or resolve_device(base.device)
    configs = sweep.configs()
    size = _chunk_size(sweep, data)
    result = SweepResult(configs, [], [], [], [])
    for start in range(0, len(configs), size):
        chunk = configs[start:start + size]
        grid = ConfigGrid([c[0] for c in chunk], [c[1] for c in chunk], [c[2] for c in chunk], [c[3] for c in chunk])
        learner = ShallowLearner(base, data, grid, device)
        records: list[dict[str, torch.Tensor]] = [dict(learner.evaluate(), step=torch.zeros(len(grid)))]
        for step in range(learner.total_steps):
            learner.step(step)
            done = step + 1
            if done % base.metrics_every == 0 or done == learner.total_steps:
                final = done == learner.total_steps
                records.append(dict(learner.evaluate(jacobian=final), step=torch.full((len(grid),), done)))
        _collect(result, records, learner)
        if on_chunk:
            on_chunk(start + len(chunk), len(configs))
    return result


def _collect(result: SweepResult, records: list[dict[str, torch.Tensor]], learner: ShallowLearner) -> None:
    for c in range(len(learner.grid)):
        per_step = [_floats({k: t[c] for k, t in rec.items()}) for rec in records]
        for entry in per_step:
            entry["step"] = int(entry["step"])
        losses = [e["train_loss"] if math.isfinite(e["train_loss"]) else math.inf for e in per_step]
        result.history.append(per_step)
        result.final.append(per_step[-1])
        result.best_train_loss.append(min(losses))
        result.weights.append(learner.W[c].cpu())
