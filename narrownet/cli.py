"""The `narrownet` command: the trainer's commands, the API client commands, and the service's processes."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from core.settings import get_settings
from narrownet.cli_common import JsonOpt, KeyOpt, UrlOpt, err, out
from narrownet.cli_common import api_errors as _api_errors
from narrownet.cli_common import client as _client
from narrownet.cli_common import fmt as _fmt
from narrownet.cli_common import print_json as _print_json
from narrownet.client import NarrownetClient
from narrownet.sweep_cli import app as sweep_app
from trainer import cli as trainer_cli

app = typer.Typer(name="narrownet", no_args_is_help=True, add_completion=False,
                  help="Train narrow neural networks: locally, or as jobs on a narrownet service.")
keys_app = typer.Typer(no_args_is_help=True, help="API keys (talks to the database directly).")
datasets_app = typer.Typer(no_args_is_help=True, help="Upload and list datasets on the service.")
db_app = typer.Typer(no_args_is_help=True, help="Database schema (Alembic migrations).")
app.add_typer(keys_app, name="keys")
app.add_typer(datasets_app, name="datasets")
app.add_typer(db_app, name="db")

# `train` and `predict` are the trainer's own commands; `sweep FILE` is its local sweep, and `sweep submit|...`
# talk to a service (narrownet/sweep_cli.py).
app.command("train")(trainer_cli.train_command)
app.command("predict")(trainer_cli.predict_command)
app.add_typer(sweep_app, name="sweep")


@app.callback()
def _service_defaults(ctx: typer.Context) -> None:
    """Train narrow neural networks: locally, or as jobs on a narrownet service."""
    # The trainer's CLI reads no service settings; the data directory is handed to it here.
    data_dir = get_settings().data_dir
    if data_dir is not None:
        ctx.default_map = {**(ctx.default_map or {}), "train": {"data_dir": str(data_dir)},
                           "sweep": {"run": {"data_dir": str(data_dir)}}}


# ------------------------------------------------------------------------------------------- client side
def _follow(client: NarrownetClient, job: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Poll a job to a terminal state under a live progress bar."""
    columns = (TextColumn("{task.description}"), BarColumn(),
               TextColumn("{task.completed}/{task.total} steps"), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=False) as bar:
        task = bar.add_task(job["status"], total=job.get("total_steps"))

        def update(current: dict[str, Any]) -> None:
            loss = (current.get("latest_metrics") or {}).get("train_loss")
            label = current["status"] + (f" loss={loss:.3g}" if isinstance(loss, float) else "")
            bar.update(task, description=label, completed=current.get("step") or 0,
                       total=current.get("total_steps"))

        return client.wait(job["id"], timeout=timeout, on_update=update)


@app.command()
def submit(
    spec: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="job spec (JSON)")],
    wait: Annotated[bool, typer.Option("--wait", help="follow the job with a progress bar")] = False,
    idempotency_key: Annotated[str | None, typer.Option(help="same key and spec -> same job")] = None,
    timeout: Annotated[float, typer.Option(help="--wait gives up after this many seconds")] = 24 * 3600.0,
    url: UrlOpt = None, key: KeyOpt = None,
) -> None:
    """Submit a training job."""
    try:
        body = json.loads(spec.read_text())
    except json.JSONDecodeError as exc:
        err.print(f"error: {spec} is not valid JSON: {exc}")
        raise typer.Exit(2) from None
    with _api_errors(), _client(url, key) as client:
        job = client.submit(body, idempotency_key=idempotency_key)
        if not wait:
            _print_json(job)
            return
        job = _follow(client, job, timeout)
    _print_json(job)
    if job["status"] != "succeeded":
        raise typer.Exit(1)


@app.command()
def status(job_id: str, url: UrlOpt = None, key: KeyOpt = None) -> None:
    """Show a job."""
    with _api_errors(), _client(url, key) as client:
        _print_json(client.job(job_id))


@app.command("list")
def list_jobs(
    status: Annotated[str | None, typer.Option(help="queued|running|succeeded|failed|cancelled")] = None,
    regime: Annotated[str | None, typer.Option(help="regular|constrained")] = None,
    name: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    as_json: JsonOpt = False, url: UrlOpt = None, key: KeyOpt = None,
) -> None:
    """List your jobs, newest first."""
    with _api_errors(), _client(url, key) as client:
        page = client.jobs(status=status, regime=regime, name=name, limit=limit)
    if as_json:
        _print_json(page)
        return
    table = Table("id", "name", "regime", "status", "progress", "step", "created")
    for job in page.get("items", []):
        progress = job.get("progress")
        table.add_row(job["id"], job.get("name", ""), job.get("regime", ""), job["status"],
                      "" if progress is None else f"{progress:.0%}", str(job.get("step", "")),
                      str(job.get("created_at", "")))
    out.print(table)


@app.command()
def metrics(
    job_id: str,
    since_step: Annotated[int | None, typer.Option(min=0)] = None,
    every: Annotated[int | None, typer.Option(min=1, help="keep every k-th point")] = None,
    as_json: JsonOpt = False, url: UrlOpt = None, key: KeyOpt = None,
) -> None:
    """Show a job's metric time series."""
    with _api_errors(), _client(url, key) as client:
        series = client.metrics(job_id, since_step=since_step, every=every)
    if as_json:
        _print_json(series)
        return
    points = series.get("points", [])
    names = sorted({k for p in points for k in p.get("values", {})})
    table = Table("step", *names)
    for p in points:
        values = p.get("values", {})
        table.add_row(str(p["step"]), *(_fmt(values.get(n)) for n in names))
    out.print(table)


@app.command()
def cancel(job_id: str, url: UrlOpt = None, key: KeyOpt = None) -> None:
    """Cancel a job (a running job stops within seconds and keeps its last checkpoint)."""
    with _api_errors(), _client(url, key) as client:
        _print_json(client.cancel(job_id))


@app.command()
def fetch(
    job_id: str,
    output: Annotated[Path, typer.Option("-o", "--output", dir_okay=False, help="where to write it")]
    = Path("model.safetensors"),
    meta: Annotated[bool, typer.Option("--meta", help="also write the metadata JSON next to it")] = False,
    url: UrlOpt = None, key: KeyOpt = None,
) -> None:
    """Download a job's checkpoint (sha256 verified)."""
    with _api_errors(), _client(url, key) as client:
        digest = client.fetch_checkpoint(job_id, output)
        if meta:
            output.with_suffix(".json").write_text(json.dumps(client.checkpoint_meta(job_id), indent=2))
    out.print(f"{output}  sha256={digest}", highlight=False)


@datasets_app.command("upload")
def datasets_upload(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help=".npz: X, y (X_test, y_test)")],
    name: Annotated[str | None, typer.Option(help="default: the file name")] = None,
    url: UrlOpt = None, key: KeyOpt = None,
) -> None:
    """Upload a dataset; its id goes in a spec as {"source": "dataset", "id": ...}."""
    with _api_errors(), _client(url, key) as client:
        _print_json(client.upload_dataset(path, name=name))


@datasets_app.command("list")
def datasets_list(as_json: JsonOpt = False, url: UrlOpt = None, key: KeyOpt = None) -> None:
    """List your datasets."""
    with _api_errors(), _client(url, key) as client:
        page = client.datasets()
    if as_json:
        _print_json(page)
        return
    table = Table("id", "name", "task", "n_train", "n_test", "bytes", "created")
    for ds in page.get("items", []):
        table.add_row(ds["id"], ds.get("name", ""), ds.get("task", ""), str(ds.get("n_train", "")),
                      str(ds.get("n_test", "")), str(ds.get("size_bytes", "")), str(ds.get("created_at", "")))
    out.print(table)


@datasets_app.command("show")
def datasets_show(dataset_id: str, url: UrlOpt = None, key: KeyOpt = None) -> None:
    """Show one dataset."""
    with _api_errors(), _client(url, key) as client:
        _print_json(client.dataset(dataset_id))


# ------------------------------------------------------------------------------------------ server side
def _upgrade_embedded() -> None:
    """Embedded mode makes its own schema (production runs `narrownet db upgrade` once, from the API)."""
    from core.db.migrate import upgrade

    settings = get_settings()
    if settings.run_migrations_on_start:
        _sqlite_parent(settings.resolved_database_url).mkdir(parents=True, exist_ok=True)
        upgrade(settings.resolved_database_url)


def _sqlite_parent(url: str) -> Path:
    return Path(url.removeprefix("sqlite:///")).parent if url.startswith("sqlite:///") else Path(".")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Bring the database schema to the latest migration."""
    from core.db.migrate import upgrade

    url = get_settings().resolved_database_url
    _sqlite_parent(url).mkdir(parents=True, exist_ok=True)
    upgrade(url)
    out.print("database schema is up to date")


@keys_app.command("create")
def keys_create(name: Annotated[str, typer.Argument(help="who the key is for")]) -> None:
    """Create an API key; the key is printed once, alone on the last line."""
    from narrownet.serve import create_api_key

    if get_settings().database_url is None:
        _upgrade_embedded()
    plaintext = create_api_key(name)
    print(f"Created API key {name!r}. It is shown only now; store it:")
    print(plaintext)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    print_key: Annotated[bool, typer.Option("--print-key", help="print a key and a curl example")] = False,
) -> None:
    """Run the service: the API and one worker, state under NARROWNET_HOME (SQLite, unless configured)."""
    from narrownet.serve import embedded_key, run_embedded

    settings = get_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    settings.resolved_artifact_dir.mkdir(parents=True, exist_ok=True)
    _upgrade_embedded()
    key = embedded_key(settings) if print_key else None
    raise typer.Exit(run_embedded(settings, host=host, port=port, key=key))


@app.command()
def worker(
    queues: Annotated[str, typer.Option(help="comma-separated: cpu, gpu")] = "cpu",
    concurrency: Annotated[int | None, typer.Option(min=1, help="parallel jobs")] = None,
) -> None:
    """Run a Celery worker that trains jobs from the given queues."""
    from core.queue import QUEUES
    from worker.celery_app import celery_app

    names = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = sorted(set(names) - set(QUEUES))
    if not names or unknown:
        err.print(f"error: --queues: unknown queue(s) {unknown or queues!r}; choose from {', '.join(QUEUES)}")
        raise typer.Exit(2)
    settings = get_settings()
    concurrency = concurrency or settings.worker_concurrency
    if "gpu" in names and concurrency != 1:
        err.print("error: --concurrency: a gpu worker runs one job per GPU; start one worker per GPU")
        raise typer.Exit(2)
    hostname = f"narrownet-{'-'.join(names)}@%h"
    celery_app.worker_main(["worker", "--queues", ",".join(names), "--concurrency", str(concurrency),
                            "--loglevel", settings.log_level, "--hostname", hostname])


@app.command()
def reconcile(once: Annotated[bool, typer.Option("--once", help="one pass, print what it did, exit")] = False,
              ) -> None:
    """Hand orphaned jobs back to their queue (a worker died, a message was lost); keep one running."""
    import logging
    import signal
    import threading

    from core.db.session import get_sessionmaker
    from core.queue import enqueue_job, enqueue_pack, make_celery
    from worker.reconciler import reconcile_once, run_reconciler

    settings = get_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    producer = make_celery(settings.resolved_broker_url)

    def enqueue(job_id: str, queue: str) -> None:
        enqueue_job(producer, job_id, queue)

    def send_pack(job_ids: list[str], queue: str) -> None:
        enqueue_pack(producer, job_ids, queue)

    if once:
        report = reconcile_once(get_sessionmaker(), lease_seconds=settings.lease_seconds,
                                max_attempts=settings.max_attempts, enqueue=enqueue, enqueue_pack=send_pack)
        print(json.dumps(vars(report)))
        return
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    run_reconciler(get_sessionmaker(), lease_seconds=settings.lease_seconds, max_attempts=settings.max_attempts,
                   interval_seconds=settings.reconcile_interval_seconds, enqueue=enqueue, stop=stop,
                   enqueue_pack=send_pack)


if __name__ == "__main__":  # pragma: no cover
    app(prog_name="narrownet", args=sys.argv[1:])
