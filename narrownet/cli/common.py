"""What every client command shares: consoles, the --url/--key options, the client, readable errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console

from core.settings import get_settings
from narrownet.client import AmbiguousId, ApiError, ChecksumMismatch, NarrownetClient, NoApiKey

out = Console(soft_wrap=True)  # messages stay one line each, whatever the terminal width
err = Console(stderr=True, soft_wrap=True)

UrlOpt = Annotated[str | None, typer.Option("--url", help="API base URL [env NARROWNET_URL]")]
KeyOpt = Annotated[str | None, typer.Option("--key", help="API key [env NARROWNET_API_KEY]")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print the raw JSON answer")]


def client(url: str | None, key: str | None) -> NarrownetClient:
    settings = get_settings()
    return NarrownetClient(url or settings.api_url, key or settings.api_key)


def fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error[/red] {message}", markup=True, highlight=False)
    return typer.Exit(code)


@contextmanager
def api_errors(url: str | None = None) -> Iterator[None]:
    """Print a failed call as one readable line and exit 1, instead of a traceback."""
    try:
        yield
    except (NoApiKey, AmbiguousId) as exc:
        raise fail(str(exc)) from None
    except ApiError as exc:
        raise fail(str(exc)) from None
    except httpx.ConnectError as exc:
        target = url or get_settings().api_url
        reason = str(exc).split("] ")[-1] or "connection refused"
        raise fail(f"cannot reach {target}: {reason}; is `narrownet serve` running? (set NARROWNET_URL or "
                   "--url to point elsewhere)") from None
    except (httpx.TransportError, ChecksumMismatch, TimeoutError) as exc:
        raise fail(f"{type(exc).__name__}: {exc}") from None


def print_json(data: Any) -> None:
    out.print_json(data=data)


def read_json_file(path: Any, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise fail(f"{path} is not valid JSON ({what}): {exc}", code=2) from None


def fmt(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else "" if value is None else str(value)
