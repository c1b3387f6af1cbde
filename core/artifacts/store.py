"""The artifact store: one small interface, two backends, chosen by one setting.

    NARROWNET_ARTIFACT_URL unset       LocalStore(artifact_dir): a directory (the embedded default, one host)
    NARROWNET_ARTIFACT_URL=s3://b/p    S3Store: S3-compatible object storage, so that workers on other hosts
                                       share nothing with the API but the store (AWS_ENDPOINT_URL, ...)

An object is visible only once complete (rename into place; an S3 PUT or a completed multipart upload), and is
never modified: checkpoint keys are per attempt and dataset keys per upload (keys.py). Its sha256 lives in the
database row that points at it and is checked by every reader (verified.py).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from types import TracebackType
from typing import Protocol

from core.settings import Settings, get_settings

CHUNK = 1 << 20


class ArtifactReader(ABC):
    """An open object: its size, a `version` that names exactly these bytes (S3's ETag; inode, mtime and size
    of a file), and its bytes as a stream. Close it (or use it as a context manager)."""

    size: int
    version: str

    @abstractmethod
    def read(self, n: int = CHUNK) -> bytes:
        """Up to n bytes; b"" at the end. StoreUnavailable if the store fails mid-stream."""

    @abstractmethod
    def close(self) -> None: ...

    def chunks(self, n: int = CHUNK) -> Iterator[bytes]:
        while chunk := self.read(n):
            yield chunk

    def __enter__(self) -> ArtifactReader:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class ArtifactStore(Protocol):
    """Keys are relative ('jobs/<id>/attempt-1/ckpt-000000100.safetensors'); see keys.py."""

    @property
    def location(self) -> str:
        """Where the objects are, for logs and errors (a directory, or s3://bucket/prefix)."""
        ...

    def put_file(self, key: str, source: Path) -> None:
        """Store a copy of `source` at `key`, visible only once complete (large files go up in parts)."""
        ...

    def put_files(self, files: Sequence[tuple[str, Path]]) -> None:
        """put_file for each (key, source), made visible in this order; all are stored once it returns."""
        ...

    def open(self, key: str, *, version: str | None = None) -> ArtifactReader:
        """Open the object; with `version`, only if it is still exactly that version (ArtifactChanged if not)."""
        ...

    def keys(self, prefix: str) -> list[str]:
        """Every complete object whose key starts with `prefix`."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object; nothing happens if there is none."""
        ...

    def ping(self) -> None:
        """Return if the store answers; StoreUnavailable naming the reason if not."""
        ...


def store_for(settings: Settings) -> ArtifactStore:
    """The backend NARROWNET_ARTIFACT_URL names; the local artifact_dir when it is unset."""
    if settings.artifact_url is None:
        from core.artifacts.local import LocalStore

        return LocalStore(settings.resolved_artifact_dir)
    from core.artifacts.s3 import S3Store  # boto3 is imported only where S3 is used

    return S3Store.from_url(settings.artifact_url)


@lru_cache
def get_artifact_store() -> ArtifactStore:
    """The process's store (a worker's pool child clears this after the fork: HTTP pools are not fork-safe)."""
    return store_for(get_settings())
