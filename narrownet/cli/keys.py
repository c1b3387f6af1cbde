"""API keys, made and revoked straight in the database (run where the service's settings point to it)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from core.db.session import unit_of_work
from core.settings import get_settings
from narrownet.cli.common import fail, out
from narrownet.cli.service import upgrade_embedded

app = typer.Typer(no_args_is_help=True, help="API keys (talks to the database directly).")


@app.command("create")
def create(name: Annotated[str, typer.Argument(help="who the key is for")]) -> None:
    """Create an API key; the key is printed once, alone on the last line."""
    from narrownet.serve import create_api_key

    if get_settings().database_url is None:
        upgrade_embedded()
    plaintext = create_api_key(name)
    print(f"Created API key {name!r}. It is shown only now; store it:")
    print(plaintext)


@app.command("list")
def list_keys(
    all_keys: Annotated[bool, typer.Option("--all", help="include revoked keys")] = False,
) -> None:
    """List API keys: id, name, the key's first characters, created, revoked (never the key itself)."""
    from api.services.keys import list_keys as listed

    with unit_of_work() as session:
        rows = [(k.id, k.name, k.prefix, k.created_at, k.revoked_at) for k in listed(session, revoked=all_keys)]
    table = Table(box=None, pad_edge=False)
    for column in ("id", "name", "key starts", "created", "revoked"):
        table.add_column(column, no_wrap=True)
    for key_id, name, prefix, created, revoked in rows:
        # 12 characters of the id are plenty to tell keys apart, and `keys revoke` takes them.
        table.add_row(key_id[:12], name, f"{prefix}...", str(created)[:16], str(revoked)[:16] if revoked else "")
    out.print(table)


@app.command("revoke")
def revoke(key: Annotated[str, typer.Argument(help="the key's id (or a unique prefix of it), or its first "
                                                   "characters as `keys list` shows them (nn_...)")]) -> None:
    """Revoke a key: requests with it are refused from now on."""
    from api.services.key_revocations import revocation_mark
    from api.services.keys import KeyLookupError, revoke_matching

    settings = get_settings()
    try:
        with unit_of_work() as session:
            revoked = revoke_matching(session, key)
    except KeyLookupError as exc:
        raise fail(str(exc)) from None
    out.print(f"revoked key {revoked.id} ({revoked.name}, {revoked.prefix}...)", highlight=False)
    # Committed: now tell every API process to stop trusting the keys it has cached.
    if (mark := revocation_mark(settings)) is not None:
        try:
            mark.write()
        except Exception as exc:  # noqa: BLE001 - the revoke stands; say what it means
            out.print(f"[yellow]warning:[/] could not write the key revocation mark ({exc}); API processes may "
                      f"accept the key for up to {settings.api_key_cache_seconds:g} s more", highlight=False)
