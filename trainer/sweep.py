"""Sweeps on one machine: a sweep file's configs (trainer/grid.py) trained pack by pack (trainer/packing.py), each
pack ONE vectorized program (trainer.loop.train_pack): the grid is the leading config dimension of every tensor,
so 49 learning-rate pairs cost one batched matmul per layer per step instead of 49 Python-level training loops.

The service runs the same packs (a Celery task per pack), so a grid gives the same numbers here and there.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.callbacks import NoPackCallbacks
from trainer.data import Dataset, load_data
from trainer.grid import GridConfig, SweepFile, expand
from trainer.loop import TrainResult, train_pack
from trainer.packing import plan_packs
from trainer.spec import JobSpec


@dataclass
class ConfigResult:
    """One config's outcome, in the shape of a row of GET /v1/sweeps/{id}/results (less the job id)."""

    index: int
    params: dict[str, Any]
    status: str  # "succeeded" | "failed"
    final_metrics: dict[str, float] | None
    error: str | None
    history: list[dict[str, float]] = field(default_factory=list)  # every recorded step, failed configs too

    def row(self) -> dict[str, Any]:
        # JSON has no NaN or Infinity: a non-finite metric is null, as the service answers it.
        final = None if self.final_metrics is None else {
            k: (v if math.isfinite(v) else None) for k, v in self.final_metrics.items()}
        return {"index": self.index, "params": self.params, "status": self.status, "final_metrics": final,
                "error": self.error}


@dataclass
class PackTiming:
    configs: list[int]  # config indices
    seconds: float


@dataclass
class SweepResult:
    sweep: SweepFile
    configs: list[GridConfig]
    results: list[ConfigResult]
    packs: list[PackTiming]


class _History(NoPackCallbacks):
    """Keeps every recorded point of every config, including those of configs that diverge later."""

    def __init__(self, n: int) -> None:
        self.points: list[list[dict[str, float]]] = [[] for _ in range(n)]

    def on_metrics(self, step: int, metrics: Mapping[int, dict[str, float]]) -> None:
        for config, values in metrics.items():
            self.points[config].append({"step": step, **values})


def run_sweep(sweep: SweepFile, *, data_dir: Path | None = None,
              on_pack: Callable[[int, int], None] | None = None) -> SweepResult:
    """Train every config of the sweep; on_pack(configs done, configs in all) after each pack."""
    configs = expand(sweep)
    datasets: dict[str, Dataset] = {}  # packs of one data spec load it once

    def data_for(spec: JobSpec) -> Dataset:
        key = json.dumps(spec.data.model_dump(mode="json"), sort_keys=True)
        if key not in datasets:
            datasets[key] = load_data(spec.data, data_dir=data_dir)
        return datasets[key]

    results: list[ConfigResult | None] = [None] * len(configs)
    timings: list[PackTiming] = []
    for pack in plan_packs([c.spec for c in configs]):
        specs = [configs[i].spec for i in pack]
        started = time.perf_counter()
        history = _History(len(pack))
        outcomes = train_pack(specs, None, history, data=data_for(specs[0]))
        timings.append(PackTiming(pack, time.perf_counter() - started))
        for i, outcome, points in zip(pack, outcomes, history.points, strict=True):
            if isinstance(outcome, TrainResult):
                results[i] = ConfigResult(i, configs[i].params, "succeeded", outcome.final_metrics, None, points)
            else:
                error = f"{type(outcome).__name__}: {outcome}"
                results[i] = ConfigResult(i, configs[i].params, "failed", None, error, points)
        if on_pack:
            on_pack(sum(len(t.configs) for t in timings), len(configs))
    return SweepResult(sweep, configs, [r for r in results if r is not None], timings)
