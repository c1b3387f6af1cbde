"""Durable file writes: a file appears complete or not at all (temp file, fsync, rename, fsync the directory).

Torch-free, so the service's local artifact store (core/artifacts/local.py) writes the same way checkpoints do.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """Make a rename (or a new file) in `directory` survive a crash."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(target: Path, write: Callable[[Path], object], *, durable: bool = True) -> None:
    """Call write(tmp) on a temp file beside `target`, fsync it, rename it over `target`, fsync the directory.

    durable=False skips both fsyncs: the file still appears whole or not at all to other processes, but a crash
    of the host may lose it (or leave it torn); for a caller that makes its own durable copy before relying on it.
    """
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        if durable:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(target.parent)
