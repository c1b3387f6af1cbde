"""The key-revocation mark: lets every API process trust the keys it has cached until a key is revoked anywhere.

Each revoke (in the API or by `narrownet keys revoke` in a process of its own) writes a new random mark once it
has committed. An API process reads the mark before it trusts its key cache and drops what it cached under an
older mark, so a revoke holds at once everywhere while the usual request skips the key query. Reading the mark
costs a Redis GET (the production setup, shared by every replica and the CLI) or reading one small file next to
the SQLite database (the embedded default: one machine by construction). Where neither is shared (a database
other than SQLite without Redis) there is no mark, and no key is cached.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Protocol

from core.settings import Settings

log = logging.getLogger(__name__)

UNREADABLE = None  # a mark that cannot be read now: trust no cached key


class RevocationMark(Protocol):
    async def read(self) -> str | None:
        """The current mark; None when it cannot be read (then nothing cached may be trusted)."""

    def write(self) -> None:
        """A new mark, after a revoke has committed. Raises when it could not be written."""

    async def aclose(self) -> None: ...


class RedisMark:
    KEY = "narrownet:keys:revocation-mark"
    TIMEOUT_SECONDS = 0.25  # a request must not wait long on it; unreadable means "ask the database"

    def __init__(self, url: str) -> None:
        import redis.asyncio

        self.url = url
        self._client = redis.asyncio.Redis.from_url(url, socket_timeout=self.TIMEOUT_SECONDS,
                                                    socket_connect_timeout=self.TIMEOUT_SECONDS)

    async def read(self) -> str | None:
        import redis

        try:
            value = await self._client.get(self.KEY)
        except (redis.RedisError, OSError) as exc:
            log.warning("key revocation mark unreadable (%s): keys are looked up in the database", exc)
            return UNREADABLE
        # Never written (or Redis was emptied): a mark of its own, so keys cached under a real one are dropped.
        if value is None:
            return "unset"
        return value.decode() if isinstance(value, bytes) else str(value)

    def write(self) -> None:
        import redis

        with redis.Redis.from_url(self.url, socket_timeout=2, socket_connect_timeout=2) as client:
            client.set(self.KEY, secrets.token_hex(16))

    async def aclose(self) -> None:
        await self._client.aclose()


class FileMark:
    def __init__(self, path: Path) -> None:
        self.path = path

    async def read(self) -> str | None:
        # A read of a few bytes of page cache: cheaper than a thread hop, so done on the event loop.
        try:
            return self.path.read_text()
        except FileNotFoundError:
            return "unset"
        except OSError as exc:
            log.warning("key revocation mark %s unreadable (%s): keys are looked up in the database", self.path, exc)
            return UNREADABLE

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}")
        temp.write_text(secrets.token_hex(16))
        os.replace(temp, self.path)  # readers see the old mark or the new one, never half of one

    async def aclose(self) -> None:
        pass


def revocation_mark(settings: Settings) -> RevocationMark | None:
    """Where this deployment keeps the mark: Redis when the broker is Redis, a file beside an SQLite database,
    else nowhere (no key cache)."""
    broker = settings.resolved_broker_url
    if broker.startswith(("redis://", "rediss://", "unix://")):
        return RedisMark(broker)
    database = settings.resolved_database_url
    if database.startswith("sqlite:///") and not database.endswith(":memory:"):
        return FileMark(Path(database.removeprefix("sqlite:///")).with_name("keys.revocation-mark"))
    return None
