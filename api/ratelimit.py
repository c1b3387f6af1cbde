"""Per-key request limit: a fixed window per key that opens with the key's first request.

In-process, so each API process counts on its own (N replicas allow up to N times the limit); a shared
limiter (Redis) is the step up when that matters.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RateLimiter:
    def __init__(self, limit: int, window_seconds: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window_seconds
        self.clock = clock
        self._windows: dict[str, tuple[float, int]] = {}  # key -> (window start, requests in it)
        self._lock = threading.Lock()  # handlers run in a thread pool

    def hit(self, key: str) -> float | None:
        """Count one request; return None when allowed, else the seconds until the window reopens."""
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

    def _forget_expired(self, now: float) -> None:
        self._windows = {k: v for k, v in self._windows.items() if now - v[0] < self.window}
