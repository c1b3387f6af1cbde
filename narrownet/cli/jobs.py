"""Client commands for jobs: submit, status, list, metrics, cancel, fetch. Every JOB argument takes a full id or
a unique prefix of one (like git's short hashes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from narrownet.cli.common import JsonOpt, KeyOpt, UrlOpt, api_errors, client, err, fmt, out, print_json, read_json_file
from narrownet.client import TERMINAL, NarrownetClient

app = typer.Typer()

JobArg = Annotated[str, typer.Argument(metavar="JOB", help="a job id, or a unique prefix of one")]
SHORT_ID = 12  # characters of an id that `list` shows; 48 bits, so a clash among one user's jobs is unlikely


def _loss(job: dict[str, Any]) -> float | None:
    metrics = job.get("final_metrics") or job.get("latest_metrics") or {}
    value = metrics.get("train_loss")
    return value if isinstance(value, float | int) else None


def follow(client: NarrownetClient, job: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Follow a job to a terminal state under a live progress bar, on its event stream (/v1/jobs/{id}/events).
    Ctrl-C stops following, not the job."""
    columns = (TextColumn("{task.description}"), BarColumn(),
               TextColumn("{task.completed}/{task.total} steps"), TimeElapsedColumn(), TimeRemainingColumn())
    try:
        with Progress(*columns, console=err, transient=False) as bar:
            task = bar.add_task(job["status"], total=job.get("total_steps"))

            def update(current: dict[str, Any]) -> None:
                loss = _loss(current)
                label = current["status"] + (f" loss={loss:.3g}" if loss is not None else "")
                bar.update(task, description=label, completed=current.get("step") or 0,
                           total=current.get("total_steps"))

            return client.follow(job["id"], timeout=timeout, on_update=update)
    except KeyboardInterrupt:
        err.print(f"stopped following; job {job['id']} keeps running on the service.\n"
                  f"  follow it again: narrownet watch {job['id'][:SHORT_ID]}\n"
                  f"  cancel it:       narrownet cancel {job['id'][:SHORT_ID]}", highlight=False)
        raise typer.Exit(130) from None


def summary(job: dict[str, Any]) -> str:
    """A few lines a person reads: status, progress, losses, error, what to do next."""
    lines = [f"job {job['id']}  {job['name']}  ({job['regime']}, queue {job['queue']})",
             f"status: {job['status']}" + (" (cancel requested)" if job.get("cancel_requested")
                                           and job["status"] == "running" else "")
             + f"  step {job.get('step', 0)}/{job.get('total_steps') or '?'}  attempt {job.get('attempt', 0)}"]
    metrics = job.get("final_metrics") or job.get("latest_metrics") or {}
    shown = [k for k in ("train_loss", "test_loss", "train_accuracy", "test_accuracy", "w_dist",
                         "jacobian_sigma_min") if k in metrics]
    if shown:
        label = "final" if job.get("final_metrics") else "latest"
        lines.append(f"{label}: " + "  ".join(f"{k}={fmt(metrics[k])}" for k in shown))
    if job.get("eta_seconds") is not None:
        lines.append(f"eta: {job['eta_seconds']:.0f}s")
    if job.get("error"):
        lines.append(f"error: {job['error']}")
    if job["status"] == "succeeded":
        lines.append(f"checkpoint: narrownet fetch {job['id'][:SHORT_ID]} -o model.safetensors")
    return "\n".join(lines)


@app.command()
def submit(
    spec: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="job spec (JSON)")],
    wait: Annotated[bool, typer.Option("--wait", help="follow the job with a progress bar")] = False,
    idempotency_key: Annotated[str | None, typer.Option(help="same key and spec -> same job")] = None,
    reuse: Annotated[bool, typer.Option("--reuse", help="if you have a succeeded job with the same spec_hash, "
                                                        "get it back instead of training again")] = False,
    timeout: Annotated[float, typer.Option(help="--wait gives up after this many seconds")] = 24 * 3600.0,
    as_json: JsonOpt = False, url: UrlOpt = None, key: KeyOpt = None,
) -> None:
    """Submit a training job; prints its id (and, with --wait, follows it to the end)."""
    body = read_json_file(spec, "a job spec")
    with api_errors(url), client(url, key) as api:
        job = api.submit(body, idempotency_key=idempotency_key, reuse=reuse)
        if not as_json:
            what = "reused job" if job.get("reused") else "submitted job"
            out.print(f"{what} {job['id']} ({job['name']}, {job['status']})", highlight=False)
        if wait:
            job = follow(api, job, timeout)
    if as_json:
        print_json(job)
    elif wait:
        out.print(summary(job), highlight=False)
    if wait and job["status"] != "succeeded":
        raise typer.Exit(1)


@app.command()
def status(job: JobArg, as_json: JsonOpt = False, url: UrlOpt = None, key: KeyOpt = None) -> None:
    """Show a job."""
    with api_errors(url), client(url, key) as api:
        found = api.job(api.resolve_job_id(job))
    if as_json:
        print_json(found)
    else:
        out.print(summary(found), highlight=False)


@app.command()
def watch(
    job: JobArg,
    timeout: Annotated[float, typer.Option(help="give up after this many seconds")] = 24 * 3600.0,
    as_json: JsonOpt = False, url: UrlOpt = None, key: KeyOpt = None,
) -> None:
    """Follow any job live (status, steps, loss) until it ends; exit 1 unless it succeeded."""
    with api_errors(url), client(url, key) as api:
        found = follow(api, api.job(api.resolve_job_id(job)), timeout)
    if as_json:
        print_json(found)
    else:
        out.print(summary(found), highlight=False)
    if found["status"] != "succeeded":
        raise typer.Exit(1)


@app.command("list")
def list_jobs(
    status: Annotated[str | None, typer.Option(help="queued|running|succeeded|failed|cancelled")] = None,
    regime: Annotated[str | None, typer.Option(help="regular|constrained")] = None,
    name: Annotated[str | None, typer.Option()] = None,
    spec_hash: Annotated[str | None, typer.Option(help="jobs whose result would be the same")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200)] = 50,
    as_json: JsonOpt = False, url: UrlOpt = None, key: KeyOpt = None,
) -> None:
    """List your jobs, newest first (ids shortened to a prefix every command accepts)."""
    with api_errors(url), client(url, key) as api:
        page = api.jobs(status=status, regime=regime, name=name, spec_hash=spec_hash, limit=limit)
    if as_json:
        print_json(page)
        return
    # In a narrow terminal the descriptive columns give way; id, status, progress, loss and time never do.
    table = Table(box=None, pad_edge=False)
    for name, keep in (("id", True), ("name", False), ("regime", False), ("model", False), ("status", True),
                       ("done", True), ("loss", True), ("created", True)):
        table.add_column(name, no_wrap=keep, overflow="ellipsis")
    for job in page.get("items", []):
        model = job.get("spec", {}).get("model", {})
        shape = model.get("width") or model.get("hidden") or model.get("block4_width") or ""
        loss = _loss(job)
        table.add_row(job["id"][:SHORT_ID], job.get("name", ""), job.get("regime", ""),
                      f"{model.get('arch', '')} {shape}".strip(), job["status"], f"{job.get('progress', 0):.0%}",
                      "" if loss is None else f"{loss:.3g}", str(job.get("created_at", ""))[5:16].replace("T", " "))
    out.print(table)
    if page.get("total", 0) > len(page.get("items", [])):
        out.print(f"({len(page['items'])} of {page['total']}; --limit to see more)")


@app.command()
def metrics(
    job: JobArg,
    since_step: Annotated[int | None, typer.Option(min=0)] = None,
    every: Annotated[int | None, typer.Option(min=1, help="keep every k-th point")] = None,
    as_json: JsonOpt = False, url: UrlOpt = None, key: KeyOpt = None,
) -> None:
    """Show a job's metric time series."""
    with api_errors(url), client(url, key) as api:
        series = api.metrics(api.resolve_job_id(job), since_step=since_step, every=every)
    if as_json:
        print_json(series)
        return
    points = series.get("points", [])
    names = sorted({k for p in points for k in p.get("values", {})})
    table = Table("step", *names)
    for p in points:
        values = p.get("values", {})
        table.add_row(str(p["step"]), *(fmt(values.get(n)) for n in names))
    out.print(table)


@app.command()
def cancel(
    job: JobArg,
    wait: Annotated[bool, typer.Option("--wait", help="wait until the job has stopped")] = False,
    as_json: JsonOpt = False, url: UrlOpt = None, key: KeyOpt = None,
) -> None:
    """Cancel a job: a queued one at once, a running one within seconds (its last checkpoint is kept)."""
    with api_errors(url), client(url, key) as api:
        before = api.job(api.resolve_job_id(job))
        found = api.cancel(before["id"])
        if wait and found["status"] not in TERMINAL:
            found = api.wait(found["id"], poll_interval=0.5)
    if as_json:
        print_json(found)
    elif before["status"] in TERMINAL:
        out.print(f"job {found['id']} had already ended ({found['status']}); nothing to cancel", highlight=False)
    elif found["status"] == "cancelled":
        out.print(f"job {found['id']} cancelled", highlight=False)
    else:
        out.print(f"cancel requested for job {found['id']}: it stops within a few seconds and keeps its last "
                  f"checkpoint (`narrownet status {found['id'][:SHORT_ID]}` shows when; --wait waits for it)",
                  highlight=False)


@app.command()
def fetch(
    job: JobArg,
    output: Annotated[Path, typer.Option("-o", "--output", dir_okay=False, help="where to write it")]
    = Path("model.safetensors"),
    meta: Annotated[bool, typer.Option("--meta", help="also write the metadata JSON next to it")] = False,
    url: UrlOpt = None, key: KeyOpt = None,
) -> None:
    """Download a job's checkpoint (sha256 verified)."""
    with api_errors(url), client(url, key) as api:
        job_id = api.resolve_job_id(job)
        digest = api.fetch_checkpoint(job_id, output)
        if meta:
            output.with_suffix(".json").write_text(json.dumps(api.checkpoint_meta(job_id), indent=2))
    out.print(f"{output}  sha256={digest}", highlight=False)
