"""Helpers the reproduction scripts share for their reports: numbers as text, one-entry-per-line JSON, machine load,
and running independent groups of runs in worker processes."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None  # JSON has no inf/NaN


def fmt(x: float | None, spec: str = ".2e") -> str:
    return "diverged" if x is None else format(x, spec)


def write_json(path: Path, report: dict) -> None:
    """report["entries"] one per line: readable, and a re-run diffs line by line."""
    report = dict(report)
    entries = report.pop("entries")
    body = json.dumps(report, indent=1)[:-2]
    path.write_text(body + ',\n "entries": [\n' + ",\n".join(json.dumps(e) for e in entries) + "\n ]\n}\n")


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: on a shared machine, wall times mean little without them."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def run_all(fn: Callable[..., T], tasks: Sequence[tuple], processes: int) -> list[T]:
    """fn(*task) for every task, in order; in `processes` worker processes when > 1 (fn must be importable)."""
    if processes <= 1:
        return [fn(*task) for task in tasks]
    with ProcessPoolExecutor(processes) as pool:
        futures = [pool.submit(fn, *task) for task in tasks]
        return [f.result() for f in futures]
