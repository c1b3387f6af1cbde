"""Per-key request limit: a fixed window per key.

Two backends behind one `hit(key)`:
- `RateLimiter`, in-process: each API process counts on its own (N replicas allow up to N times the limit).
- `RedisRateLimiter`, shared: every replica counts in the same Redis, so the limit holds for the service as a
  whole. While Redis cannot be reached it falls back to its in-process limiter (logged), so a Redis outage
  neither stalls every request nor lifts the limit.
`make_limiter(settings)` picks one: "auto" is Redis when the broker is Redis (the production setup), else memory.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Protocol

from core.settings import Settings

log = logging.getLogger(__name__)


class Limiter(Protocol):
    limit: int

    def hit(self, key: str) -> float | None:
        """Count one request; return None when allowed, else the seconds until the window reopens."""

    async def ahit(self, key: str) -> float | None:
        """hit() for the event loop: never blocks it on I/O."""

    def close(self) -> None: ...

    async def aclose(self) -> None: ...


class RateLimiter:
    def __init__(self, limit: int, window_seconds: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window_seconds
        self.clock = clock
        self._windows: dict[str, tuple[float, int]] = {}  # key -> (window start, requests in it)
        self._lock = threading.Lock()  # handlers run in a thread pool

    def hit(self, key: str) -> float | None:
        now = self.clock()
        with self._lock:
            start, count = self._windows.get(key, (now, 0))
            if now - start >= self.window:
                start, count = now, 0
            if count >= self.limit:
                return max(start + self.window - now, 0.0)
            self._windows[key] = (start, count + 1)
            if len(self._windows) > 10_000:
                self._forget_expired(now)
            return None

    async def ahit(self, key: str) -> float | None:
        return self.hit(key)  # a dict update under a lock held for microseconds

    def _forget_expired(self, now: float) -> None:
        self._windows = {k: v for k, v in self._windows.items() if now - v[0] < self.window}

    def close(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


class RedisRateLimiter:
    """Windows aligned to the clock (`floor(now / window)`), one counter key per (API key, window)."""

    PREFIX = "narrownet:ratelimit:"
    TIMEOUT_SECONDS = 0.25  # a request must not wait long on a limiter
    RETRY_REDIS_AFTER_SECONDS = 5.0

    # One command, so one round trip and far less client work than a pipeline (redis.asyncio's pipeline costs
    # ~2x a single command in CPU): count the request, set the window's expiry once, and optionally read one
    # more key in the same trip (the key revocation mark, api/services/key_revocations.py).
    HIT_SCRIPT = ("local n = redis.call('INCR', KEYS[1]) "
                  "if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end "
                  "if KEYS[2] then return {n, redis.call('GET', KEYS[2])} end return {n, false}")

    def __init__(self, url: str, limit: int, window_seconds: float = 60.0,
                 clock: Callable[[], float] = time.time) -> None:
        import redis
        import redis.asyncio

        self.limit = limit
        self.window = window_seconds
        self.clock = clock
        timeout = self.TIMEOUT_SECONDS
        self.client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self.url = url
        # Connects on first use, in the event loop that uses it.
        self.async_client = redis.asyncio.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._hit = self.async_client.register_script(self.HIT_SCRIPT)
        self.fallback = RateLimiter(limit, window_seconds)
        self._redis_down_until = 0.0

    def hit(self, key: str) -> float | None:
        import redis

        now = self.clock()
        if now < self._redis_down_until:
            return self.fallback.hit(key)
        counter, index = self._counter(key, now)
        try:
            with self.client.pipeline(transaction=True) as pipe:
                pipe.incr(counter)
                pipe.expire(counter, math.ceil(self.window) + 1)
                count, _ = pipe.execute()
        except redis.RedisError as exc:
            return self._redis_down(exc, key, now)
        return self._verdict(count, index, now)

    async def ahit(self, key: str) -> float | None:
        return (await self.ahit_reading(key, None))[0]

    async def ahit_reading(self, key: str, other: str | None) -> tuple[float | None, str | None]:
        """ahit(key), and the value of the Redis key `other` read in the same round trip ("unset" when it has
        none; None when Redis could not be asked)."""
        import redis

        now = self.clock()
        if now < self._redis_down_until:
            return self.fallback.hit(key), None
        counter, index = self._counter(key, now)
        try:
            count, value = await self._hit(keys=[counter] if other is None else [counter, other],
                                           args=[math.ceil(self.window) + 1])
        except (redis.RedisError, OSError) as exc:
            return self._redis_down(exc, key, now), None
        read = None if other is None else "unset" if value is None else bytes(value).decode()
        return self._verdict(int(count), index, now), read

    def _counter(self, key: str, now: float) -> tuple[str, int]:
        index = math.floor(now / self.window)
        return f"{self.PREFIX}{key}:{index}", index

    def _verdict(self, count: int, index: int, now: float) -> float | None:
        if count > self.limit:
            return max((index + 1) * self.window - now, 0.0)
        return None

    def _redis_down(self, exc: Exception, key: str, now: float) -> float | None:
        log.warning("rate limiter: Redis unreachable (%s); limiting in-process for %.0fs", exc,
                    self.RETRY_REDIS_AFTER_SECONDS)
        self._redis_down_until = now + self.RETRY_REDIS_AFTER_SECONDS
        return self.fallback.hit(key)

    def close(self) -> None:
        self.client.close()

    async def aclose(self) -> None:
        await self.async_client.aclose()


def make_limiter(settings: Settings) -> Limiter:
    backend = settings.rate_limit_backend
    broker = settings.resolved_broker_url
    if backend == "auto":
        backend = "redis" if broker.startswith(("redis://", "rediss://")) else "memory"
    if backend == "redis":
        url = settings.rate_limit_redis_url or broker
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"rate_limit_backend=redis needs a Redis URL (rate_limit_redis_url or broker_url), "
                             f"got {url!r}")
        return RedisRateLimiter(url, settings.rate_limit_per_minute)
    return RateLimiter(settings.rate_limit_per_minute)
