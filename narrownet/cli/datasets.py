"""Client commands for datasets: upload, list, show."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from narrownet.cli.common import JsonOpt, KeyOpt, UrlOpt, api_errors, client, out, print_json

app = typer.Typer(no_args_is_help=True, help="Upload and list datasets on the service.")


@app.command("upload")
def upload(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help=".npz: X, y (X_test, y_test)")],
    name: Annotated[str | None, typer.Option(help="default: the file name")] = None,
    as_json: JsonOpt = False, url: UrlOpt = None, key: KeyOpt = None,
) -> None:
    """Upload a dataset; a spec then names it as {"source": "dataset", "name": ...} (or by its id)."""
    with api_errors(url), client(url, key) as api:
        dataset = api.upload_dataset(path, name=name)
    if as_json:
        print_json(dataset)
        return
    out.print(f"uploaded {dataset['name']} (id {dataset['id']}): {dataset['n_train']} training and "
              f"{dataset['n_test']} test samples, {dataset['task']}\n"
              f'use it in a job spec as  "data": {{"source": "dataset", "name": "{dataset["name"]}"}}',
              highlight=False)


@app.command("list")
def list_datasets(as_json: JsonOpt = False, url: UrlOpt = None, key: KeyOpt = None) -> None:
    """List your datasets."""
    with api_errors(url), client(url, key) as api:
        page = api.datasets()
    if as_json:
        print_json(page)
        return
    table = Table("id", "name", "task", "n_train", "n_test", "bytes", "created")
    table.columns[0].no_wrap = True
    for ds in page.get("items", []):
        table.add_row(ds["id"], ds.get("name", ""), ds.get("task", ""), str(ds.get("n_train", "")),
                      str(ds.get("n_test", "")), str(ds.get("size_bytes", "")),
                      str(ds.get("created_at", ""))[:19].replace("T", " "))
    out.print(table)


@app.command("show")
def show(dataset_id: str, url: UrlOpt = None, key: KeyOpt = None) -> None:
    """Show one dataset."""
    with api_errors(url), client(url, key) as api:
        print_json(api.dataset(dataset_id))
