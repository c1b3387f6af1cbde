"""How progress leaves the training loop: results, the divergence error, and the callback protocols.

`Callbacks` is one job's (trainer.loop.train); `PackCallbacks` is a pack's (trainer.loop.train_pack), where every
call names the configs it is about by their position in the pack.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from trainer.plan.shapes import DataShape


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""

    def __init__(self, step: int, loss: float) -> None:
        super().__init__(f"training diverged at step {step}: train_loss = {loss}")
        self.step, self.loss = step, loss


@dataclass
class TrainResult:
    status: Literal["completed", "stopped"]
    step: int
    total_steps: int
    final_metrics: dict[str, float]
    checkpoint: Path | None
    history: list[dict[str, float]] = field(default_factory=list)
    data_shape: DataShape | None = None  # what the run trained on (the worker counts its FLOPs with it)


# How one config of a pack ended: its result, or what ended it alone (TrainingDiverged, CheckpointError).
Outcome = TrainResult | Exception


class Callbacks(Protocol):
    """Where progress leaves the trainer. Implement it (worker.progress.JobProgress does), or subclass it
    explicitly to inherit these no-op defaults and override what you need."""

    def on_start(self, total_steps: int, start_step: int) -> None:
        """Called once the data is loaded: the step budget (epochs x batches) is known only then."""
        return None

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        return None

    def on_checkpoint(self, step: int, path: Path, meta: dict[str, Any]) -> None:
        return None

    def should_stop(self) -> bool:
        return False


class NoCallbacks(Callbacks):
    """Nothing leaves the trainer but the files it writes."""


@dataclass(frozen=True)
class Poll:
    """What a pack's callbacks ask of the loop: configs to stop (checkpoint, end "stopped") and configs to drop
    (end at once, nothing written: they no longer belong to this run)."""

    stop: frozenset[int] = frozenset()
    drop: frozenset[int] = frozenset()


class PackCallbacks(Protocol):
    """A pack's progress; `config` is a position in the list of specs given to train_pack."""

    def on_start(self, total_steps: int, start_steps: Sequence[int]) -> None:
        return None

    def on_metrics(self, step: int, metrics: Mapping[int, dict[str, float]]) -> None:
        """The configs recorded at `step` (all still training ones, at the same step)."""
        return None

    def on_checkpoints(self, step: int, saved: Mapping[int, tuple[Path, dict[str, Any]]]) -> None:
        return None

    def poll(self) -> Poll:
        """Asked about once a second and at every recorded step."""
        return Poll()

    def on_end(self, config: int, outcome: Outcome) -> None:
        """A config is done: as soon as it is, while the others may go on."""
        return None


class NoPackCallbacks(PackCallbacks):
    """Nothing leaves the pack but the files it writes and the outcomes train_pack returns."""


class OneJob(PackCallbacks):
    """One job's Callbacks as a pack of one."""

    def __init__(self, callbacks: Callbacks) -> None:
        self.callbacks = callbacks

    def on_start(self, total_steps: int, start_steps: Sequence[int]) -> None:
        self.callbacks.on_start(total_steps, start_steps[0])

    def on_metrics(self, step: int, metrics: Mapping[int, dict[str, float]]) -> None:
        self.callbacks.on_metrics(step, metrics[0])

    def on_checkpoints(self, step: int, saved: Mapping[int, tuple[Path, dict[str, Any]]]) -> None:
        self.callbacks.on_checkpoint(step, *saved[0])

    def poll(self) -> Poll:
        return Poll(stop=frozenset({0})) if self.callbacks.should_stop() else Poll()
