"""The shape of every id the service makes (jobs, sweeps, datasets): 1-64 letters, digits, `_` and `-`.

One pattern, matched whole with `fullmatch`: `^...$` with `re.match` also accepts a trailing newline, so an id
sent as `abc%0A` would have passed as `abc` does.
"""

from __future__ import annotations

import re

PLAIN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def is_plain_id(value: str) -> bool:
    return PLAIN_ID.fullmatch(value) is not None
