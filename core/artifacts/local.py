"""The local backend: objects are files under one directory (the embedded default, and one-host deployments).

Writes are a link (or a copy across filesystems) to a temp name, fsync, rename: a file appears only whole.
Reads open regular files only, never through a symlink nor outside the root: anything else is ArtifactNotFound.
"""

from __future__ import annotations

import os
import secrets
import shutil
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from core.artifacts.errors import ArtifactChanged, ArtifactNotFound
from core.artifacts.keys import check_key
from core.artifacts.store import CHUNK, ArtifactReader
from trainer.files import fsync_dir


class _FileReader(ArtifactReader):
    def __init__(self, file: BinaryIO, size: int, version: str) -> None:
        self.file, self.size, self.version = file, size, version

    def read(self, n: int = CHUNK) -> bytes:
        return self.file.read(n)

    def close(self) -> None:
        self.file.close()


class LocalStore:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    @property
    def location(self) -> str:
        return str(self.root)

    def _path(self, key: str) -> Path:
        try:
            path = (self.root / check_key(key)).resolve()
        except (OSError, ValueError, RuntimeError) as exc:  # a symlink loop
            raise ArtifactNotFound(f"{key[:80]!r}: {exc}") from exc
        if not path.is_relative_to(self.root):
            raise ArtifactNotFound(f"{key[:80]!r} is not under {self.root}")
        return path

    def put_file(self, key: str, source: Path) -> None:
        self.put_files([(key, source)])

    def put_files(self, files: Sequence[tuple[str, Path]]) -> None:
        # Every file whole and fsynced under a temp name first, then renamed into place in order, then each
        # directory fsynced once (a checkpoint's weights and metadata: one directory fsync, not two).
        staged: list[tuple[Path, Path]] = []
        try:
            for key, source in files:
                target = self._path(key)
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
                staged.append((tmp, target))
                try:
                    os.link(source, tmp)  # same filesystem (an upload's staging file, a run dir beside the store)
                except OSError:
                    shutil.copyfile(source, tmp)
                with open(tmp, "rb+") as f:
                    os.fsync(f.fileno())
            for tmp, target in staged:
                os.replace(tmp, target)
        except BaseException:
            for tmp, _ in staged:
                tmp.unlink(missing_ok=True)
            raise
        for directory in dict.fromkeys(target.parent for _, target in staged):
            fsync_dir(directory)

    def open(self, key: str, *, version: str | None = None) -> ArtifactReader:
        path = self._path(key)
        try:
            # O_NONBLOCK: a FIFO planted at the path must not block the open forever.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
        except OSError as exc:
            raise ArtifactNotFound(f"{key}: missing or unreadable ({exc.strerror})") from exc
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise ArtifactNotFound(f"{key}: not a regular file")
        current = f"{info.st_ino}-{info.st_mtime_ns}-{info.st_size}"
        if version is not None and version != current:
            os.close(fd)
            raise ArtifactChanged(f"{key}: replaced since it was read")
        os.set_blocking(fd, True)
        return _FileReader(os.fdopen(fd, "rb"), info.st_size, current)

    def keys(self, prefix: str) -> list[str]:
        base = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not base.resolve().is_relative_to(self.root) or not base.is_dir():
            return []
        found = []
        for directory, _, files in os.walk(base):
            for name in files:
                if name.startswith("."):  # a write in progress, or one a crash left behind
                    continue
                key = (Path(directory) / name).relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    found.append(key)
        return sorted(found)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def ping(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
