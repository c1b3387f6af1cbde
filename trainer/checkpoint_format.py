"""A checkpoint's file format, without torch: its format tag, how many are kept, and its size from tensor shapes.

trainer/checkpoint.py writes the files; the planner (trainer/plan) predicts their size from this module alone.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping

FORMAT = "narrownet.checkpoint.v1"
KEEP_LATEST = 2

_ITEMSIZE = {"F64": 8, "I64": 8, "F32": 4, "I32": 4, "BF16": 2, "F16": 2}
# safetensors lays tensors out by dtype, in its enum's order reversed (I64 before F64 before F32), then by name.
_LAYOUT_RANK = {"I64": 0, "F64": 1, "F32": 2, "I32": 3, "BF16": 4, "F16": 5}


def header_metadata(step: int) -> dict[str, str]:
    """The .safetensors header's metadata of a checkpoint at `step`. One key: safetensors writes its metadata map in
    no fixed order, and with two keys the same weights came out as two different files (and sha256s)."""
    return {"narrownet": json.dumps({"format": FORMAT, "step": step}, sort_keys=True)}


def safetensors_bytes(tensors: Iterable[tuple[str, tuple[int, ...], str]], metadata: Mapping[str, str]) -> int:
    """The size of the .safetensors file holding these (name, shape, dtype) tensors and this metadata: an 8-byte
    length, the JSON header padded with spaces to a multiple of 8, then the data."""
    header: dict[str, object] = {"__metadata__": dict(metadata)}
    offset = 0
    for name, shape, dtype in sorted(tensors, key=lambda t: (_LAYOUT_RANK[t[2]], t[0])):
        size = math.prod(shape) * _ITEMSIZE[dtype]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    length = len(json.dumps(header, separators=(",", ":")).encode())
    return 8 + -(-length // 8) * 8 + offset
