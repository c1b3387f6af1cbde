"""The training loop, once for one job (`train`) and for a pack of configs trained as one vectorized program
(`train_pack`; a job is a pack of one): cadence of metrics and checkpoints, resume, stop, divergence.

Every config of a pack keeps its own run directory, checkpoints (the format and cadence a lone job writes),
metrics.jsonl and outcome, so a config can be resumed alone or in another pack. A config that diverges or is
stopped leaves the pack (trainer/shallow/learner.py keep_configs) while the others go on. Configs resumed from
checkpoints at different steps are trained in groups of equal start step, one group after another.
Progress leaves by callbacks (trainer/callbacks.py).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from trainer.callbacks import (
    Callbacks,
    NoCallbacks,
    NoPackCallbacks,
    OneJob,
    Outcome,
    PackCallbacks,
    Poll,
    TrainingDiverged,
    TrainResult,
)
from trainer.checkpoint import Checkpoint, CheckpointError, latest_checkpoint, save_checkpoint
from trainer.data import Dataset, load_data
from trainer.deep import DeepLearner
from trainer.packing import pack_key
from trainer.plan.shapes import DataShape
from trainer.shallow.learner import ConfigGrid, ShallowLearner
from trainer.spec import JobSpec, ShallowModel

__all__ = ["Callbacks", "NoCallbacks", "PackCallbacks", "Poll", "TrainResult", "TrainingDiverged", "make_learner",
           "resolve_device", "train", "train_pack"]

STOP_POLL_SECONDS = 1.0

Learner = ShallowLearner | DeepLearner


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda requested but no CUDA device is available")
    return torch.device(name)


def make_learner(spec: JobSpec, data: Dataset, grid: ConfigGrid, device: torch.device) -> Learner:
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


def per_config(metrics: dict[str, torch.Tensor]) -> list[dict[str, float]]:
    """(C,) metric tensors -> one {name: float} per config, in a single host-device transfer."""
    names = list(metrics)
    rows = torch.stack([metrics[k].float().reshape(-1) for k in names]).cpu().tolist()
    return [dict(zip(names, column, strict=True)) for column in zip(*rows, strict=True)]


def train(spec: JobSpec, out_dir: Path, *, callbacks: Callbacks | None = None, data_dir: Path | None = None,
          dataset_path: Path | None = None, data: Dataset | None = None, spec_hash: str | None = None,
          durable: bool = True) -> TrainResult:
    """Train one job into out_dir, resuming from its latest valid checkpoint if one is there.

    spec_hash (trainer/fingerprint.py) is written into every checkpoint's metadata. durable=False: checkpoints
    are not fsynced (trainer/files.py), for a caller that makes its own durable copy of each one.
    """
    outcome = train_pack([spec], [Path(out_dir)], OneJob(callbacks or NoCallbacks()), data_dir=data_dir,
                         dataset_path=dataset_path, data=data, spec_hashes=[spec_hash], durable=durable)[0]
    if isinstance(outcome, Exception):
        raise outcome
    assert outcome is not None  # a pack of one is never dropped: OneJob never asks for it
    return outcome


def train_pack(specs: Sequence[JobSpec], out_dirs: Sequence[Path] | None,
               callbacks: PackCallbacks | None = None, *, data_dir: Path | None = None,
               dataset_path: Path | None = None, data: Dataset | None = None,
               spec_hashes: Sequence[str | None] | None = None, durable: bool = True) -> list[Outcome | None]:
    """Train configs that share one program (equal trainer.packing.pack_key) together; return each one's outcome:
    its TrainResult, the error that ended it alone (TrainingDiverged, CheckpointError), or None when the callbacks
    dropped it. out_dirs None: nothing is written (no checkpoints, no resume). spec_hashes (trainer/fingerprint.py),
    one per config, are written into the configs' checkpoint metadata. durable: as for train.

    Errors that concern the whole pack (its data, its device) are raised.
    """
    if not specs:
        return []
    if out_dirs is not None and len(out_dirs) != len(specs):
        raise ValueError(f"out_dirs: {len(out_dirs)} directories for {len(specs)} configs")
    keys = {pack_key(s) for s in specs}
    if len(specs) > 1 and (None in keys or len(keys) > 1):
        raise ValueError("specs: these configs cannot train as one program (their trainer.packing.pack_key differs)")
    device = resolve_device(specs[0].device)
    data = data if data is not None else load_data(specs[0].data, data_dir=data_dir, dataset_path=dataset_path)
    dirs: Sequence[Path | None] = out_dirs if out_dirs is not None else [None] * len(specs)
    hashes: Sequence[str | None] = spec_hashes if spec_hashes is not None else [None] * len(specs)
    runs = [_Run(i, spec, None if d is None else Path(d), spec_hash=h)
            for i, (spec, d, h) in enumerate(zip(specs, dirs, hashes, strict=True))]
    return _Pack(runs, data, device, callbacks or NoPackCallbacks(), durable).run()


@dataclass(eq=False)
class _Run:
    """One config's side of a pack: its spec, directory, resume point and what it has recorded."""

    index: int
    spec: JobSpec
    out_dir: Path | None
    spec_hash: str | None = None
    start: int = 0
    checkpoint: Checkpoint | None = None
    path: Path | None = None  # the latest checkpoint
    saved_step: int | None = None  # its step
    log: MetricsLog | None = None
    last: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.spec_json = self.spec.model_dump(mode="json")

    def resume(self) -> None:
        """Find the newest valid checkpoint in the run directory (CheckpointError when none verifies)."""
        if self.out_dir is None:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        ckpt = latest_checkpoint(self.out_dir)
        if ckpt is not None:
            if ckpt.meta.get("spec") != self.spec_json:
                raise CheckpointError(f"{ckpt.path.name} belongs to a different spec; use an empty output directory")
            self.checkpoint, self.start, self.path, self.saved_step = ckpt, ckpt.step, ckpt.path, ckpt.step
            self.last = dict(ckpt.meta.get("metrics") or {})
        self.log = MetricsLog(self.out_dir / "metrics.jsonl", self.start if ckpt is not None else None)

    def result(self, status: str, step: int, total: int) -> TrainResult:
        return TrainResult("completed" if status == "completed" else "stopped", step, total, self.last, self.path,
                           self.history)


class _Pack:
    def __init__(self, runs: list[_Run], data: Dataset, device: torch.device, callbacks: PackCallbacks,
                 durable: bool = True) -> None:
        self.runs, self.data, self.device, self.callbacks, self.durable = runs, data, device, callbacks, durable
        self.shape = DataShape(data.n_train, data.n_test, data.input_shape, data.output_dim, data.task)
        self.outcomes: dict[int, Outcome | None] = {}  # None: dropped
        self.waiting: set[int] = set()  # configs of groups that have not started training
        self.total = 0
        first = runs[0].spec
        self.metrics_every, self.checkpoint_every = first.metrics_every, first.checkpoint_every
        self.jacobian_every, self.by_epochs = first.jacobian_every, first.optim.epochs is not None
        self.per_epoch = 1

    # --------------------------------------------------------------------------------------------- driving
    def run(self) -> list[Outcome | None]:
        for run in self.runs:
            try:
                run.resume()
            except CheckpointError as exc:
                self.end(run, exc)
        live = [r for r in self.runs if r.index not in self.outcomes]
        self.waiting = {r.index for r in live}
        started = False
        for start in sorted({r.start for r in live}):
            group = [r for r in live if r.start == start and r.index in self.waiting]
            self.waiting -= {r.index for r in group}
            if not group:
                continue
            learner = make_learner(group[0].spec, self.data, ConfigGrid.of([r.spec for r in group]), self.device)
            if not started:
                self.total, self.per_epoch = learner.total_steps, learner.steps_per_epoch
                self.callbacks.on_start(self.total, [r.start for r in self.runs])
                started = True
            self.train_group(learner, group)
        return [self.outcomes.get(r.index) for r in self.runs]

    def train_group(self, learner: Learner, group: list[_Run]) -> None:
        """Train configs that resume from the same step to the end (or until each one leaves)."""
        for pos, run in enumerate(group):
            try:
                if run.checkpoint is not None:
                    learner.load_state_tensors(run.checkpoint.tensors, pos)
            except CheckpointError as exc:
                self.end(run, exc)
            run.checkpoint = None  # loaded: free the tensors
        active = self.shrink(learner, group)
        start, total = group[0].start, self.total
        if not active:
            return
        if start >= total:  # resumed finished runs: nothing left but to report them
            for run in active:
                self.end(run, run.result("completed", run.start, total))
            return
        if start == 0:
            active = self.record(learner, active, 0)
        next_poll = time.monotonic() + STOP_POLL_SECONDS
        step = start
        while step < total and active:
            learner.step(step)
            step += 1
            if self.due(step):
                active = self.record(learner, active, step)
            if step == total or not active:
                break
            if self.checkpoint_every and step % self.checkpoint_every == 0:
                self.checkpoint(learner, active, step, final=False)
            if self.due(step) or time.monotonic() >= next_poll:
                next_poll = time.monotonic() + STOP_POLL_SECONDS
                active = self.poll(learner, active, step)
        if active and step == total:
            self.checkpoint(learner, active, total, final=True)
            for run in active:
                self.end(run, run.result("completed", total, total))

    def due(self, step: int) -> bool:
        # Every metrics_every steps, at the end, and (when training by epochs) at the end of every epoch.
        return (step % self.metrics_every == 0 or step == self.total
                or (self.by_epochs and step % self.per_epoch == 0))

    # ---------------------------------------------------------------------------------------- what a step does
    def record(self, learner: Learner, active: list[_Run], step: int,
               only: Sequence[_Run] | None = None) -> list[_Run]:
        """Evaluate and record the metrics of `only` (default: every active config); a config whose training loss
        is no longer finite ends TrainingDiverged, alone. Returns the configs still active."""
        with_jacobian = step == self.total or (self.jacobian_every is not None and step % self.jacobian_every == 0)
        values = per_config(learner.evaluate(jacobian=with_jacobian))
        recorded: dict[int, dict[str, float]] = {}
        diverged: list[tuple[_Run, float]] = []
        for run, metrics in zip(active, values, strict=True):
            if only is not None and run not in only:
                continue
            if not math.isfinite(metrics["train_loss"]):
                diverged.append((run, metrics["train_loss"]))
                continue
            if self.by_epochs:
                metrics["epoch"] = step / self.per_epoch
            entry = {"step": step, **metrics}
            if run.log is not None:
                run.log.append(entry)
            run.history.append(entry)
            run.last = metrics
            recorded[run.index] = metrics
        if recorded:
            self.callbacks.on_metrics(step, recorded)
        for run, loss in diverged:
            self.end(run, TrainingDiverged(step, loss))
        return self.shrink(learner, active)

    def checkpoint(self, learner: Learner, active: list[_Run], step: int, *, final: bool,
                   only: Sequence[_Run] | None = None) -> None:
        saved: dict[int, tuple[Path, dict[str, Any]]] = {}
        for pos, run in enumerate(active):
            if run.out_dir is None or (only is not None and run not in only):
                continue
            tensors = {**learner.state_tensors(pos), "x_mean": self.data.x_mean, "x_std": self.data.x_std}
            meta: dict[str, Any] = {"spec": run.spec_json, "spec_hash": run.spec_hash, "total_steps": self.total,
                                    "final": final, "metrics": run.last}
            if final:
                meta.update({f"final_{k}": v for k, v in run.last.items()})
            run.path, full = save_checkpoint(run.out_dir, step, tensors, meta, durable=self.durable)
            run.saved_step = step
            saved[run.index] = (run.path, full)
        if saved:
            self.callbacks.on_checkpoints(step, saved)

    def poll(self, learner: Learner, active: list[_Run], step: int) -> list[_Run]:
        """Ask the callbacks which configs to stop or drop; stopped ones are recorded and checkpointed first."""
        asked = self.callbacks.poll()
        for run in self.runs:
            if run.index in asked.drop and run.index not in self.outcomes:
                self.outcomes[run.index] = None
                self.waiting.discard(run.index)
            elif run.index in asked.stop and run.index in self.waiting:  # stopped before its group trained
                self.waiting.discard(run.index)
                self.end(run, run.result("stopped", run.start, self.total))
        active = self.shrink(learner, active)
        stopping = [run for run in active if run.index in asked.stop]
        if stopping:
            if not self.due(step):
                active = self.record(learner, active, step, only=stopping)
                stopping = [run for run in stopping if run in active]
            # A checkpoint written at this very step (checkpoint_every) already holds this state.
            self.checkpoint(learner, active, step, final=False,
                            only=[run for run in stopping if run.saved_step != step])
            for run in stopping:
                self.end(run, run.result("stopped", step, self.total))
        return self.shrink(learner, active)

    # -------------------------------------------------------------------------------------------- leaving
    def end(self, run: _Run, outcome: Outcome) -> None:
        if isinstance(outcome, TrainResult):
            outcome.data_shape = self.shape
        self.outcomes[run.index] = outcome
        self.callbacks.on_end(run.index, outcome)

    def shrink(self, learner: Learner, active: list[_Run]) -> list[_Run]:
        """Take the configs that ended (or were dropped) out of the learner; the rest go on."""
        keep = [pos for pos, run in enumerate(active) if run.index not in self.outcomes]
        if len(keep) < len(active) and keep:
            assert isinstance(learner, ShallowLearner)  # only packs (shallow) have more than one config
            learner.keep_configs(keep)
        return [active[pos] for pos in keep]
