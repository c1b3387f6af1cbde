"""What the `narrownet` client commands share: the consoles, the --url/--key/--json options, the client built from
them and the settings, and one readable line (exit 1) for a failed call."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console

from core.settings import get_settings
from narrownet.client import ApiError, ChecksumMismatch, NarrownetClient

out = Console()
err = Console(stderr=True)

UrlOpt = Annotated[str | None, typer.Option("--url", help="API base URL [env NARROWNET_URL]")]
KeyOpt = Annotated[str | None, typer.Option("--key", help="API key [env NARROWNET_API_KEY]")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print the raw JSON answer")]


def client(url: str | None, key: str | None) -> NarrownetClient:
    settings = get_settings()
    return NarrownetClient(url or settings.api_url, key or settings.api_key)


@contextmanager
def api_errors() -> Iterator[None]:
    """Print a failed call as one readable line and exit 1, instead of a traceback."""
    try:
        yield
    except ApiError as exc:
        err.print(f"[red]error[/red] {exc}", markup=True, highlight=False)
        raise typer.Exit(1) from None
    except (httpx.TransportError, ChecksumMismatch, TimeoutError) as exc:
        err.print(f"[red]error[/red] {type(exc).__name__}: {exc}", markup=True, highlight=False)
        raise typer.Exit(1) from None


def print_json(data: Any) -> None:
    out.print_json(data=data)


def fmt(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else "" if value is None else str(value)
