"""The `narrownet` command: the trainer's commands, the API client commands, and the service's processes.

One module per group of commands: jobs.py (submit, status, watch, list, ...), sweeps.py (`sweep FILE` here,
`sweep submit|status|...` on a service), plan.py, datasets.py, keys.py, service.py (serve, worker, reconcile, db);
`train` and `predict` are the trainer's own (trainer.cli).
"""

from __future__ import annotations

import typer

from core.settings import get_settings
from narrownet.cli import datasets, jobs, keys, plan, service, sweeps
from trainer import cli as trainer_cli

app = typer.Typer(name="narrownet", no_args_is_help=True, add_completion=False,
                  help="Train narrow neural networks: locally, or as jobs on a narrownet service.")
app.command("train")(trainer_cli.train_command)
app.command("predict")(trainer_cli.predict_command)
app.add_typer(jobs.app)
app.add_typer(plan.app)
app.add_typer(service.app)
app.add_typer(sweeps.app, name="sweep")
app.add_typer(datasets.app, name="datasets")
app.add_typer(keys.app, name="keys")
app.add_typer(service.db_app, name="db")


@app.callback()
def _service_defaults(ctx: typer.Context) -> None:
    """Train narrow neural networks: locally, or as jobs on a narrownet service."""
    # The trainer's CLI reads no service settings; the data directory is handed to it here.
    data_dir = get_settings().data_dir
    if data_dir is not None:
        ctx.default_map = {**(ctx.default_map or {}), "train": {"data_dir": str(data_dir)},
                           "sweep": {"run": {"data_dir": str(data_dir)}}}
