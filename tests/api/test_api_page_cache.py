"""The list cache on its own (api/services/page_cache.py) and the middleware that empties it on writes."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from api.middleware import EmptiedByWrites
from api.services.page_cache import PageCache

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def put(cache: PageCache, key: str, rows: int) -> Any:
    """Keep a page of `rows` rows under `key`; the page kept."""
    kept = [{"n": i} for i in range(rows)]
    cache.put(cache.ticket(), key, kept, rows)
    return kept


class TestPageCache:
    def test_a_page_is_answered_again_until_it_is_as_old_as_the_cache_allows(self) -> None:
        clock = Clock()
        cache = PageCache(seconds=1.0, max_rows=100, clock=clock)
        kept = put(cache, "k", 3)
        clock.now += 0.99
        assert cache.get("k") is kept
        clock.now += 0.01
        assert cache.get("k") is None
        assert len(cache) == 0 and cache.rows == 0

    def test_a_page_read_while_the_cache_was_emptied_is_not_kept(self) -> None:
        cache = PageCache(seconds=60, max_rows=100)
        ticket = cache.ticket()  # the read starts...
        cache.empty()  # ...a write answers meanwhile...
        cache.put(ticket, "k", ["row", "row"], 2)  # ...and what the read saw may be from before it
        assert cache.get("k") is None
        put(cache, "k", 2)
        assert cache.get("k") is not None

    def test_emptying_forgets_every_page(self) -> None:
        cache = PageCache(seconds=60, max_rows=100)
        for key in ("a", "b"):
            put(cache, key, 1)
        cache.empty()
        assert cache.get("a") is None and cache.get("b") is None and cache.rows == 0

    def test_the_least_recently_used_pages_go_first_once_the_rows_pass_the_cap(self) -> None:
        cache = PageCache(seconds=60, max_rows=5)
        for key in ("a", "b"):
            put(cache, key, 2)
        assert cache.get("a") is not None  # b is now the least recently used
        put(cache, "c", 2)
        assert cache.get("b") is None
        assert cache.get("a") is not None and cache.get("c") is not None and cache.rows == 4
        put(cache, "huge", 6)  # more than the whole cache may hold
        assert cache.get("huge") is None and cache.rows == 4

    def test_a_page_kept_again_replaces_the_one_before(self) -> None:
        cache = PageCache(seconds=60, max_rows=10)
        put(cache, "k", 4)
        newer = put(cache, "k", 1)
        assert cache.get("k") is newer and cache.rows == 1

    @pytest.mark.parametrize(("seconds", "rows"), [(0, 100), (1.0, 0)])
    def test_nothing_is_kept_when_turned_off(self, seconds: float, rows: int) -> None:
        cache = PageCache(seconds=seconds, max_rows=rows)
        put(cache, "k", 1)
        assert cache.get("k") is None and len(cache) == 0


class TestEmptiedByWrites:
    @staticmethod
    async def answer(method: str, cache: PageCache) -> list[tuple[str, int]]:
        """Run one request through the middleware; for each message sent, the cache's epoch when it left."""
        sent: list[tuple[str, int]] = []

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})

        async def send(message: Message) -> None:
            sent.append((message["type"], cache.epoch))

        async def receive() -> Message:
            return {"type": "http.request", "body": b""}

        await EmptiedByWrites(app, empty=cache.empty)({"type": "http", "method": method}, receive, send)
        return sent

    @pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
    async def test_a_request_that_may_write_empties_the_cache_before_its_answer_starts(self, method: str) -> None:
        cache = PageCache(seconds=60, max_rows=10)
        put(cache, "k", 1)
        sent = await self.answer(method, cache)
        assert sent[0] == ("http.response.start", 1)  # emptied before the client could see the answer
        assert cache.get("k") is None and cache.epoch == 2  # and again once it ended

    @pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
    async def test_reads_leave_the_cache_alone(self, method: str) -> None:
        cache = PageCache(seconds=60, max_rows=10)
        put(cache, "k", 1)
        await self.answer(method, cache)
        assert cache.epoch == 0 and cache.get("k") is not None

    async def test_a_write_that_fails_before_answering_still_empties_the_cache(self) -> None:
        cache = PageCache(seconds=60, max_rows=10)
        put(cache, "k", 1)

        async def failing(scope: Scope, receive: Receive, send: Send) -> None:
            raise RuntimeError("boom")

        async def nothing() -> Message:
            return {"type": "http.request", "body": b""}

        async def ignore(message: Message) -> None:
            pass

        with pytest.raises(RuntimeError):
            await EmptiedByWrites(failing, empty=cache.empty)({"type": "http", "method": "POST"}, nothing, ignore)
        assert cache.get("k") is None
