"""`narrownet sweep`: a sweep file trained here (`narrownet sweep FILE`, the trainer's command) or on a service
(`narrownet sweep submit FILE [--wait]`, `status|list|results|summary|heatmap|cancel`). One file format for both."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer.core import TyperGroup

from narrownet.cli.common import JsonOpt, KeyOpt, UrlOpt, api_errors, client, err, fmt, out, print_json
from narrownet.cli.plan import show as show_plan
from trainer import cli as trainer_cli


class _LocalByDefault(TyperGroup):
    """`narrownet sweep FILE ...` is `narrownet sweep run FILE ...`: the local command keeps its old spelling."""

    # ctx is typer's vendored click Context, which typer does not export.
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(cls=_LocalByDefault, no_args_is_help=True,
                  help="Sweeps: `narrownet sweep FILE` trains a sweep file here; `submit` sends it to a service.")
app.command("run")(trainer_cli.sweep_command)

Axis = Annotated[str | None, typer.Option(help="a grid axis (dotted path)")]


def _read(path: Path) -> dict[str, Any]:
    try:
        body = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        err.print(f"error: {path} is not a readable JSON sweep file: {exc}")
        raise typer.Exit(2) from None
    if not isinstance(body, dict):
        err.print(f"error: {path} must hold a JSON object: {{\"name\", \"base\", \"grid\", \"objective\"}}")
        raise typer.Exit(2)
    return body


def _best(sweep: dict[str, Any]) -> str:
    best = sweep.get("best")
    if not best:
        return "best: -"
    params = ", ".join(f"{k}={json.dumps(v)}" for k, v in best["params"].items())
    return f"best {best['metric']}={best['value']:.4g} ({params})"


def _sweep_summary(sweep: dict[str, Any]) -> str:
    counts = ", ".join(f"{n} {status}" for status, n in sorted(sweep.get("counts", {}).items()) if n)
    return "\n".join([f"sweep {sweep['id']}  {sweep.get('name', '')}: {sweep['status']} ({counts})", _best(sweep),
                      f"table:   narrownet sweep summary {sweep['id']}",
                      f"heatmap: narrownet sweep heatmap {sweep['id']} -o heatmap.png",
                      f"rows:    narrownet sweep results {sweep['id']} --csv"])


@app.command()
def submit(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="sweep file (JSON)")],
    wait: Annotated[bool, typer.Option("--wait", help="follow it: configs done / total, best so far")] = False,
    idempotency_key: Annotated[str | None, typer.Option(help="same key and file -> same sweep")] = None,
    timeout: Annotated[float, typer.Option(help="--wait gives up after this many seconds")] = 24 * 3600.0,
    reuse: Annotated[bool, typer.Option("--reuse", help="configs you already trained (same spec_hash, succeeded) "
                                                        "point at those jobs instead of training again")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="show the plan (counts, packs, run time) and queue "
                                                            "nothing")] = False,
    as_json: JsonOpt = False, url: UrlOpt = None, key: KeyOpt = None,
) -> None:
    """Submit a sweep file to the service; each config becomes a job, packs train as one program."""
    body = _read(path)
    with api_errors(url), client(url, key) as api:
        if dry_run:
            show_plan(api.submit_sweep(body, reuse=reuse, dry_run=True), as_json)
            return
        sweep = api.submit_sweep(body, idempotency_key=idempotency_key, reuse=reuse)
        if not as_json:
            reused = sweep["counts"].get("succeeded", 0) if reuse else 0
            out.print(f"submitted sweep {sweep['id']}: {sweep['n_configs']} configs, "
                      + (f"{reused} reused, " if reuse else "")
                      + f"{sweep['n_configs'] - reused} to train in {len(sweep['packs'])} pack(s)", highlight=False)
        if not wait:
            if as_json:
                print_json(sweep)
            return
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("configs"),
                   TimeElapsedColumn())
        try:
            with Progress(*columns, console=err) as bar:
                task = bar.add_task(sweep["status"], total=sweep["n_configs"])

                def update(current: dict[str, Any]) -> None:
                    finished = sum(current["counts"].get(s, 0) for s in ("succeeded", "failed", "cancelled"))
                    bar.update(task, completed=finished, description=f"{current['status']}  {_best(current)}")

                sweep = api.wait_sweep(sweep["id"], timeout=timeout, on_update=update)
        except KeyboardInterrupt:
            err.print(f"stopped following; sweep {sweep['id']} keeps running on the service.\n"
                      f"  follow it again: narrownet sweep status {sweep['id']}\n"
                      f"  cancel it:       narrownet sweep cancel {sweep['id']}", highlight=False)
            raise typer.Exit(130) from None
    if as_json:
        print_json({k: v for k, v in sweep.items() if k not in ("grid", "base")})
    else:
        out.print(_sweep_summary(sweep), highlight=False)
    if sweep["status"] != "succeeded":
        raise typer.Exit(1)


@app.command()
def status(sweep_id: str, url: UrlOpt = None, key: KeyOpt = None) -> None:
    """Show a sweep: status, counts per job status, progress, ETA, best config so far."""
    with api_errors(url), client(url, key) as api:
        print_json(api.sweep(sweep_id))


@app.command("list")
def list_sweeps(limit: Annotated[int, typer.Option(min=1, max=200)] = 50, as_json: JsonOpt = False,
                url: UrlOpt = None, key: KeyOpt = None) -> None:
    """List your sweeps, newest first."""
    with api_errors(url), client(url, key) as api:
        page = api.sweeps(limit=limit)
    if as_json:
        print_json(page)
        return
    table = Table("id", "name", "status", "configs", "progress", "created")
    for s in page["items"]:
        table.add_row(s["id"], s["name"], s["status"], str(s["n_configs"]), f"{s['progress']:.0%}", s["created_at"])
    out.print(table)


@app.command()
def results(sweep_id: str, csv: Annotated[bool, typer.Option("--csv", help="CSV instead of a table")] = False,
            output: Annotated[Path | None, typer.Option("-o", "--output", help="write to this file")] = None,
            as_json: JsonOpt = False, url: UrlOpt = None, key: KeyOpt = None) -> None:
    """One row per config: grid values, job id, status, final metrics."""
    with api_errors(url), client(url, key) as api:
        if csv:
            text = api.sweep_results_csv(sweep_id)
            if output is not None:
                output.write_text(text)
            else:
                print(text, end="")
            return
        answer = api.sweep_results(sweep_id)
    if output is not None:
        output.write_text(json.dumps(answer, indent=2))
    elif as_json:
        print_json(answer)
    else:
        metric = answer["objective"]["metric"]
        table = Table("index", *answer["axes"], metric, "status", "job")
        for row in answer["items"]:
            table.add_row(str(row["index"]), *(json.dumps(row["params"].get(a)) for a in answer["axes"]),
                          fmt((row["final_metrics"] or {}).get(metric)), row["status"], row["job_id"])
        out.print(table)


@app.command()
def summary(sweep_id: str, rows: Axis = None, cols: Axis = None, split: Axis = None,
            metric: Annotated[str | None, typer.Option(help="default: the objective's metric")] = None,
            reduce: Annotated[str | None, typer.Option(help="min|max; default: the objective's mode")] = None,
            as_json: JsonOpt = False, url: UrlOpt = None, key: KeyOpt = None) -> None:
    """The Figure-4 table: per (split, row, col) cell, the best value over the other axes."""
    with api_errors(url), client(url, key) as api:
        table = api.sweep_summary(sweep_id, rows=rows, cols=cols, split=split, metric=metric, reduce=reduce)
    if as_json:
        print_json(table)
        return
    for panel in table["panels"]:
        title = f"{table['reduce']} {table['metric']}"
        if table["split"]:
            title += f"  ({table['split']['axis']} = {json.dumps(panel['split'])})"
        col_axis = table["cols"]["axis"] if table["cols"] else ""
        grid = Table(f"{table['rows']['axis']} \\ {col_axis}", title=title)
        for value in (table["cols"]["values"] if table["cols"] else [None]):
            grid.add_column(json.dumps(value) if table["cols"] else "", justify="right")
        for row_value, line in zip(table["rows"]["values"], panel["cells"], strict=True):
            grid.add_row(json.dumps(row_value), *(fmt(cell["value"]) if cell["value"] is not None else "n/a"
                                                  for cell in line))
        out.print(grid)


@app.command()
def heatmap(sweep_id: str,
            output: Annotated[Path, typer.Option("-o", "--output", help=".png or .svg")] = Path("heatmap.png"),
            rows: Axis = None, cols: Axis = None, split: Axis = None,
            metric: Annotated[str | None, typer.Option()] = None, reduce: Annotated[str | None, typer.Option()] = None,
            url: UrlOpt = None, key: KeyOpt = None) -> None:
    """Download the summary as a heatmap (PNG or SVG, from the file name)."""
    image_format = "svg" if output.suffix.lower() == ".svg" else "png"
    with api_errors(url), client(url, key) as api:
        api.sweep_heatmap(sweep_id, output, fmt=image_format, rows=rows, cols=cols, split=split, metric=metric,
                          reduce=reduce)
    out.print(f"{output}", highlight=False)


@app.command()
def cancel(sweep_id: str, url: UrlOpt = None, key: KeyOpt = None) -> None:
    """Cancel every unfinished config of a sweep (idempotent)."""
    with api_errors(url), client(url, key) as api:
        print_json(api.cancel_sweep(sweep_id))
