"""Reading objects against the sha256 recorded for them: nothing unverified is ever served or resumed from."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from core.artifacts.errors import ArtifactMismatch
from core.artifacts.store import CHUNK, ArtifactReader, ArtifactStore


class _Verifying(ArtifactReader):
    """A second read of bytes already verified once: hashed again on the way through, and a mismatch at the end
    raises (an aborted download) instead of ending cleanly."""

    def __init__(self, inner: ArtifactReader, key: str, sha256: str) -> None:
        self.inner, self.key, self.expected = inner, key, sha256
        self.size, self.version = inner.size, inner.version
        self._digest = hashlib.sha256()

    def read(self, n: int = CHUNK) -> bytes:
        chunk = self.inner.read(n)
        if chunk:
            self._digest.update(chunk)
        elif (actual := self._digest.hexdigest()) != self.expected:
            raise ArtifactMismatch(self.key, actual, self.expected)
        return chunk

    def close(self) -> None:
        self.inner.close()


def _sha256(reader: ArtifactReader) -> str:
    digest = hashlib.sha256()
    for chunk in reader.chunks():
        digest.update(chunk)
    return digest.hexdigest()


def open_verified(store: ArtifactStore, key: str, sha256: str) -> ArtifactReader:
    """Hash the object, then open that same version again to stream it: the caller may answer 200 before the
    first byte goes out, and no copy of the object is held in memory or on disk.

    ArtifactMismatch if the bytes do not hash to `sha256`; ArtifactChanged if the object was replaced between
    the two reads; ArtifactNotFound, StoreUnavailable as the store says.
    """
    with store.open(key) as first:
        actual, version = _sha256(first), first.version
    if actual != sha256:
        raise ArtifactMismatch(key, actual, sha256)
    return _Verifying(store.open(key, version=version), key, sha256)


def fetch_verified(store: ArtifactStore, key: str, dest: Path, sha256: str) -> int:
    """Download the object to `dest` (temp file, fsync, rename: `dest` appears only whole and verified);
    return its size. ArtifactMismatch leaves nothing behind."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    digest, size = hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as out, store.open(key) as reader:
            for chunk in reader.chunks():
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != sha256:
            raise ArtifactMismatch(key, digest.hexdigest(), sha256)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return size


def read_small(store: ArtifactStore, key: str, max_bytes: int) -> bytes:
    """A small object (a checkpoint's metadata JSON) whole; ValueError if it is larger than max_bytes."""
    with store.open(key) as reader:
        if reader.size > max_bytes:
            raise ValueError(f"larger than {max_bytes} bytes")
        data = bytearray()
        while chunk := reader.read(max_bytes + 1 - len(data)):
            data += chunk
            if len(data) > max_bytes:
                raise ValueError(f"larger than {max_bytes} bytes")
        return bytes(data)
