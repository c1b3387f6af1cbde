"""What the artifact store raises; the API maps each to one status (410, 409, 503), a worker retries the last."""

from __future__ import annotations


class ArtifactError(Exception):
    """Base of the artifact store's errors."""


class ArtifactNotFound(ArtifactError):
    """No complete object at the key (never written, deleted, or not a regular file)."""


class ArtifactMismatch(ArtifactError):
    """The object's bytes do not hash to the sha256 recorded for them (tampered with, or torn)."""

    def __init__(self, key: str, actual: str, expected: str) -> None:
        super().__init__(f"{key}: sha256 {actual} does not match recorded {expected}")
        self.key, self.actual, self.expected = key, actual, expected


class ArtifactChanged(ArtifactError):
    """The object was replaced between two reads that had to see the same bytes."""


class StoreUnavailable(ArtifactError):
    """The store cannot be reached, or failed, right now: try again later (503 to a client, retried by workers)."""
