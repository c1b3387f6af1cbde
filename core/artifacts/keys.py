"""Object keys, each built from server-made ids and numbers only, never from anything a user sent.

`check_key` guards the way back in: a key read from a database row is refused unless it has the shape these
functions make (no `..`, no leading `/`, no backslash, no NUL), so neither backend can be walked out of its root.
"""

from __future__ import annotations

import re

from core.artifacts.errors import ArtifactNotFound
from core.ids import is_plain_id

_KEY = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*")
WEIGHTS_SUFFIX, META_SUFFIX = ".safetensors", ".json"
MAX_KEY_CHARS = 256  # the relpath column's width


def _id(value: str, what: str) -> str:
    if not is_plain_id(value):
        raise ValueError(f"{what} {value[:80]!r} is not a server-made id")
    return value


def check_key(key: str) -> str:
    """`key` if it is one our functions could have made; ArtifactNotFound (a 410 to a client) otherwise."""
    if len(key) > MAX_KEY_CHARS or not _KEY.fullmatch(key) or ".." in key.split("/"):
        raise ArtifactNotFound(f"{key[:80]!r} is not an artifact key")
    return key


def dataset_key(dataset_id: str) -> str:
    return f"datasets/{_id(dataset_id, 'dataset id')}.npz"


def job_prefix(job_id: str) -> str:
    return f"jobs/{_id(job_id, 'job id')}/"


def checkpoint_key(job_id: str, attempt: int, step: int) -> str:
    """The weights of one checkpoint. Per attempt, so that a fenced-out attempt still writing can never
    overwrite what a newer one recorded: every key is written by one attempt only."""
    return f"{job_prefix(job_id)}attempt-{int(attempt)}/ckpt-{int(step):09d}{WEIGHTS_SUFFIX}"


def meta_key(weights_key: str) -> str:
    """The metadata JSON beside a checkpoint's weights (it holds their sha256)."""
    if not weights_key.endswith(WEIGHTS_SUFFIX):
        raise ArtifactNotFound(f"{weights_key[:80]!r} is not a checkpoint's weights")
    return weights_key.removesuffix(WEIGHTS_SUFFIX) + META_SUFFIX
