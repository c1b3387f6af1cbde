"""Skip a test whose external service (PostgreSQL, Redis) is missing, except in CI, where that fails."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


def require_service(name: str, check: Callable[[], object]) -> None:
    """Run `check` (which raises when `name` is unreachable); skip locally, fail under CI=true."""
    try:
        check()
    except Exception as exc:  # any failure to reach the service means "not available"
        reason = f"{name} is not reachable ({type(exc).__name__}: {exc})"
        if in_ci():
            pytest.fail(f"{reason}; CI=true requires it", pytrace=False)
        pytest.skip(f"{reason}; start it to run this test (CI=true makes this a failure)")
