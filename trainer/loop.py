"""The training loop for one job: cadence of metrics and checkpoints, resume, stop; progress leaves by callbacks."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import torch

from trainer.checkpoint import CheckpointError, latest_checkpoint, save_checkpoint
from trainer.data import Dataset, load_data
from trainer.deep import DeepLearner
from trainer.plan.shapes import DataShape
from trainer.shallow.learner import ConfigGrid, ShallowLearner
from trainer.spec import JobSpec, ShallowModel

STOP_POLL_SECONDS = 1.0


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""

    def __init__(self, step: int, loss: float) -> None:
        super().__init__(f"training diverged at step {step}: train_loss = {loss}")
        self.step, self.loss = step, loss


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


@dataclass
class TrainResult:
    status: Literal["completed", "stopped"]
    step: int
    total_steps: int
    final_metrics: dict[str, float]
    checkpoint: Path | None
    history: list[dict[str, float]] = field(default_factory=list)
    data_shape: DataShape | None = None  # what the run trained on (the worker counts its FLOPs with it)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda requested but no CUDA device is available")
    return torch.device(name)


def make_learner(spec: JobSpec, data: Dataset, grid: ConfigGrid, device: torch.device) -> ShallowLearner | DeepLearner:
    if isinstance(spec.model, ShallowModel):
        return ShallowLearner(spec, data, grid, device)
    if len(grid) != 1:
        raise ValueError(f"model.arch {spec.model.arch!r}: deep nets train one config at a time (no sweep)")
    return DeepLearner(spec, data, device)


class MetricsLog:
    """metrics.jsonl: one JSON object per recorded step, rewritten on resume so each step appears once."""

    def __init__(self, path: Path, resume_step: int | None) -> None:
        self.path = path
        if resume_step is not None and path.exists():
            kept = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= resume_step]
            path.write_text("".join(ln + "\n" for ln in kept))
        elif resume_step is None:
            path.write_text("")

    def append(self, record: dict[str, float]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


def _floats(metrics: dict[str, torch.Tensor]) -> dict[str, float]:
    # The one host-device sync per record: everything moves in a single transfer.
    names = list(metrics)
    values = torch.stack([metrics[k].float().reshape(()) for k in names]).cpu().tolist()
    return dict(zip(names, values, strict=True))


def train(spec: JobSpec, out_dir: Path, *, callbacks: Callbacks | None = None, data_dir: Path | None = None,
          dataset_path: Path | None = None, data: Dataset | None = None, spec_hash: str | None = None) -> TrainResult:
    """Train one job into out_dir, resuming from its latest valid checkpoint if one is there.

    spec_hash (trainer/fingerprint.py) is written into every checkpoint's metadata.
    """
    callbacks = callbacks or NoCallbacks()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(spec.device)
    data = data if data is not None else load_data(spec.data, data_dir=data_dir, dataset_path=dataset_path)
    learner = make_learner(spec, data, ConfigGrid.single(spec), device)
    spec_json = spec.model_dump(mode="json")

    start = 0
    ckpt = latest_checkpoint(out_dir)
    if ckpt is not None:
        if ckpt.meta.get("spec") != spec_json:
            raise CheckpointError(f"{ckpt.path.name} belongs to a different spec; use an empty output directory")
        learner.load_state_tensors(ckpt.tensors)
        start = ckpt.step
    log = MetricsLog(out_dir / "metrics.jsonl", start if ckpt is not None else None)
    total = learner.total_steps
    history: list[dict[str, float]] = []
    last: dict[str, float] = {}
    jacobian_every = spec.jacobian_every

    by_epochs = spec.optim.epochs is not None
    per_epoch = learner.steps_per_epoch

    def due(step: int) -> bool:
        # Every metrics_every steps, at the end, and (when training by epochs) at the end of every epoch.
        return step % spec.metrics_every == 0 or step == total or (by_epochs and step % per_epoch == 0)

    def record(step: int) -> dict[str, float]:
        with_jacobian = step == total or (jacobian_every is not None and step % jacobian_every == 0)
        values = _floats(learner.evaluate(jacobian=with_jacobian))
        if not math.isfinite(values["train_loss"]):
            raise TrainingDiverged(step, values["train_loss"])
        if by_epochs:
            values["epoch"] = step / per_epoch
        entry = {"step": step, **values}
        log.append(entry)
        history.append(entry)
        callbacks.on_metrics(step, values)
        return values

    def checkpoint(step: int, final: bool) -> Path:
        tensors = {**learner.state_tensors(), "x_mean": data.x_mean, "x_std": data.x_std}
        meta: dict[str, Any] = {"spec": spec_json, "spec_hash": spec_hash, "total_steps": total, "final": final,
                                "metrics": last}
        if final:
            meta.update({f"final_{k}": v for k, v in last.items()})
        path, full = save_checkpoint(out_dir, step, tensors, meta)
        callbacks.on_checkpoint(step, path, full)
        return path

    callbacks.on_start(total, start)
    if start == 0:
        last = record(0)
    elif ckpt is not None:
        last = dict(ckpt.meta.get("metrics") or {})
    shape = DataShape(data.n_train, data.n_test, data.input_shape, data.output_dim, data.task)
    if start >= total:  # resumed a finished run: nothing left but to report it
        return TrainResult("completed", start, total, last, ckpt.path if ckpt else None, history, shape)

    next_poll = time.monotonic() + STOP_POLL_SECONDS
    step = start
    while step < total:
        learner.step(step)
        step += 1
        if due(step):
            last = record(step)
        if step == total:
            break
        if spec.checkpoint_every and step % spec.checkpoint_every == 0:
            checkpoint(step, final=False)
        if due(step) or time.monotonic() >= next_poll:
            next_poll = time.monotonic() + STOP_POLL_SECONDS
            if callbacks.should_stop():
                if not due(step):
                    last = record(step)
                path = checkpoint(step, final=False)
                return TrainResult("stopped", step, total, last, path, history, shape)
    path = checkpoint(total, final=True)
    return TrainResult("completed", total, total, last, path, history, shape)
