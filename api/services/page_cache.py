"""Pages of GET /v1/jobs kept for a moment, so that 50 clients polling their lists do not each read and decode
20 rows from the database every time.

The consistency this gives (README, Configuration: NARROWNET_API_LIST_CACHE_SECONDS):
- a write made through this API process is seen by the next list it answers: every request that may write (any
  method but GET, HEAD and OPTIONS, unless answered 401) empties the cache before its answer starts (api/middleware.py,
  EmptiedByWrites), and a page read while it ran is not kept (the epoch of `ticket` moved on);
- a change made elsewhere (the worker's progress and results, the reconciler, another API process) shows within
  `seconds`, the life of a page;
- GET /v1/jobs/{id} is never cached, and a page's ETA is computed when it is answered, not when it was read.

Pages are kept per (owner, filters, limit, offset), least recently used first out once they hold more than
`max_rows` rows in all. Everything runs on the event loop, so nothing here locks.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any


@dataclass
class _Kept:
    page: Any
    rows: int
    read_at: float


class PageCache:
    def __init__(self, seconds: float, max_rows: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.max_rows = max_rows
        self.clock = clock
        self.epoch = 0
        self.rows = 0
        self._kept: OrderedDict[Hashable, _Kept] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.seconds > 0 and self.max_rows > 0

    def get(self, key: Hashable) -> Any:
        """The page kept under `key`, or None when there is none or it is too old."""
        kept = self._kept.get(key)
        if kept is None:
            return None
        if self.clock() - kept.read_at >= self.seconds:
            self._drop(key)
            return None
        self._kept.move_to_end(key)
        return kept.page

    def ticket(self) -> int:
        """Taken before a page is read; `put` keeps the page only if nothing was emptied since."""
        return self.epoch

    def put(self, ticket: int, key: Hashable, page: Any, rows: int) -> None:
        """Keep `page` (of `rows` job rows) under `key`, unless the cache was emptied since `ticket`."""
        if not self.enabled or ticket != self.epoch or rows > self.max_rows:
            return
        if key in self._kept:
            self._drop(key)
        self._kept[key] = _Kept(page, rows, self.clock())
        self.rows += rows
        while self.rows > self.max_rows:
            self._drop(next(iter(self._kept)))

    def empty(self) -> None:
        """Forget every page, and every page being read now."""
        self.epoch += 1
        self._kept.clear()
        self.rows = 0

    def __len__(self) -> int:
        return len(self._kept)

    def _drop(self, key: Hashable) -> None:
        self.rows -= self._kept.pop(key).rows
