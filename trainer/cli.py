"""`narrownet train` / `predict` / `sweep`: the trainer on the command line, no service needed.

Also runnable as `python -m trainer.cli` where only the trainer is installed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from trainer.spec import JobSpec

# torch and the training modules are imported inside the commands: `narrownet status` and the other service
# commands share this CLI and should not pay torch's ~1.5 s import.

app = typer.Typer(help="Train narrow networks in the paper's regular and constrained regimes.", no_args_is_help=True)
console = Console(stderr=True, soft_wrap=True)  # a message stays one line, whatever the terminal width


def fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code=2)


def validation_messages(e: ValidationError) -> list[str]:
    return [f"{'.'.join(str(p) for p in err['loc']) or 'spec'}: {err['msg']}" for err in e.errors()]


def read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as e:
        raise fail(f"{what}: file {path} not found") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise fail(f"{what}: {path} is not valid JSON ({e})") from e


def load_spec(path: Path) -> JobSpec:
    try:
        return JobSpec.model_validate(read_json(path, "spec"))
    except ValidationError as e:
        raise fail("invalid spec\n  " + "\n  ".join(validation_messages(e))) from e


@app.command("train")
def train_command(
    spec_path: Path = typer.Argument(..., metavar="SPEC.json", help="job spec (JSON)"),
    out: Path = typer.Option(..., "--out", "-o", help="run directory: checkpoints, metadata, metrics.jsonl"),
    data_dir: Path | None = typer.Option(None, help="local MNIST IDX / CIFAR python batches (narrownet passes "
                                                       "NARROWNET_DATA_DIR)"),
    threads: int | None = typer.Option(None, min=1, help="CPU threads (default: 1 for small nets, all cores for "
                                                         "big ones)"),
) -> None:
    """Train one job; resumes if OUT already holds a checkpoint of the same spec."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from trainer.checkpoint import CheckpointError
    from trainer.data import DataError, load_data
    from trainer.loop import Callbacks, TrainingDiverged, train
    from trainer.threads import step_macs

    class ProgressCallbacks(Callbacks):
        def __init__(self, progress: Progress, task: Any) -> None:
            self.progress, self.task = progress, task

        def on_start(self, total_steps: int, start_step: int) -> None:
            if start_step >= total_steps:
                self.progress.console.print(f"{out} already holds the finished run (step {start_step}); "
                                            "nothing to train (use an empty --out to train again)")
            elif start_step:
                self.progress.console.print(f"resuming from step {start_step} of {total_steps} ({out})")
            self.progress.update(self.task, total=total_steps, completed=start_step)

        def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
            self.progress.update(self.task, completed=step, loss=f"loss {metrics['train_loss']:.4g}")

    spec = load_spec(spec_path)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[loss]}"), TimeRemainingColumn())
    try:
        data = load_data(spec.data, data_dir=data_dir)
        use_threads(threads, step_macs(spec, data.n_train, math.prod(data.input_shape), data.output_dim))
        with Progress(*columns, console=console) as progress:
            task = progress.add_task(spec.name, total=None, loss="")
            result = train(spec, out, callbacks=ProgressCallbacks(progress, task), data=data,
                           spec_hash=local_spec_hash(spec, data_dir))
    except (DataError, CheckpointError, TrainingDiverged, RuntimeError) as e:
        raise fail(str(e)) from e
    Console().print(f"{spec.name}: {result.status} at step {result.step}/{result.total_steps}", highlight=False)
    table = Table()
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in result.final_metrics.items():
        table.add_row(name, f"{value:.6g}")
    Console().print(table)
    Console().print(f"checkpoint: {result.checkpoint}")


def local_spec_hash(spec: JobSpec, data_dir: Path | None) -> str | None:
    """The spec_hash a service with the same versions would give this job (None: the data cannot be read)."""
    from trainer.fingerprint import data_identity, spec_hash

    identity = data_identity(spec.data, data_dir=data_dir)
    return None if identity is None else spec_hash(spec, identity)


def use_threads(requested: int | None, macs_per_step: float) -> None:
    """--threads if given, else what the problem's size calls for (trainer/threads.py)."""
    import os

    import torch

    from trainer.threads import threads_for

    torch.set_num_threads(requested or threads_for(macs_per_step, len(os.sched_getaffinity(0))))


@app.command("predict")
def predict_command(
    checkpoint: Path = typer.Argument(..., help="a .safetensors checkpoint written by `train`"),
    data: Path = typer.Argument(..., help=".npz with X (and optionally y to report the loss)"),
    out: Path | None = typer.Option(None, "--out", "-o", help="write predictions to this .npz"),
) -> None:
    """Predict with a checkpoint (sha256 verified); report loss/accuracy when y is given."""
    import numpy as np
    import torch

    from trainer.checkpoint import CheckpointError, load_checkpoint
    from trainer.predict import predict, score

    try:
        ckpt = load_checkpoint(checkpoint)
    except CheckpointError as e:
        raise fail(str(e)) from e
    try:
        with np.load(data, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:
        raise fail(f"data: cannot read {data} as .npz without pickles ({e})") from e
    if "X" not in arrays or arrays["X"].dtype.kind not in "fiu" or not np.isfinite(arrays["X"]).all():
        raise fail("data.X: missing, non-numeric or not finite")
    try:
        F = predict(ckpt, torch.from_numpy(arrays["X"]))
    except ValueError as e:
        raise fail(str(e)) from e
    summary: dict[str, Any] = {"n": int(F.shape[0]), "outputs": int(F.shape[1])}
    if "y" in arrays:
        try:
            summary.update(score(ckpt, F, torch.from_numpy(arrays["y"])))
        except ValueError as e:
            raise fail(str(e)) from e
    if out is not None:
        np.savez(out, predictions=F.numpy())
        summary["written"] = str(out)
    typer.echo(json.dumps(summary))


@app.command("sweep")
def sweep_command(
    sweep_path: Path = typer.Argument(..., metavar="SWEEP.json",
                                      help='{"name", "base": <job spec>, "grid": {"optim.lr_hidden": [...], ...}, '
                                           '"objective": {"metric": "train_loss", "mode": "min"}}'),
    out: Path | None = typer.Option(None, "--out", "-o", help="write the results (one row per config) as JSON"),
    data_dir: Path | None = typer.Option(None, help="local MNIST IDX / CIFAR python batches"),
) -> None:
    """Train a sweep file's grid here, each pack of compatible configs as one vectorized program.

    The format is POST /v1/sweeps's; the older {"base", "lr_hidden", "lr_outer", "radius", "seed"} is read too."""
    from trainer.data import DataError
    from trainer.grid import GridError, parse_sweep_file
    from trainer.sweep import run_sweep

    try:
        sweep = parse_sweep_file(read_json(sweep_path, "sweep"))
    except ValidationError as e:
        raise fail("invalid sweep\n  " + "\n  ".join(validation_messages(e))) from e
    try:
        result = run_sweep(sweep, data_dir=data_dir,
                           on_pack=lambda done, total: console.print(f"{done}/{total} configs"))
    except GridError as e:
        raise fail("invalid sweep\n  " + "\n  ".join(f"{f}: {r}" for f, r in e.fields)) from e
    except DataError as e:
        raise fail(str(e)) from e
    metric, mode = sweep.objective.metric, sweep.objective.mode
    rows = [r.row() for r in result.results]

    def value(row: dict[str, Any]) -> float | None:
        v = (row["final_metrics"] or {}).get(metric)
        return v if isinstance(v, float) and v == v and abs(v) != float("inf") else None

    ranked = sorted(rows, key=lambda r: (value(r) is None, (value(r) or 0.0) * (1 if mode == "min" else -1)))
    table = Table(title=f"{sweep.sweep_name}: {len(rows)} configs, {len(result.packs)} pack(s), by {metric} ({mode})")
    for col in (*sweep.axes, metric, "status"):
        table.add_column(col, justify="right")
    for r in ranked:
        v = value(r)
        table.add_row(*(json.dumps(r["params"][a]) for a in sweep.axes), "" if v is None else f"{v:.4g}",
                      r["status"])
    Console().print(table)
    if out is not None:
        out.write_text(json.dumps({"name": sweep.sweep_name, "axes": sweep.axes,
                                   "objective": sweep.objective.model_dump(), "items": rows}, indent=2))


if __name__ == "__main__":
    app()
