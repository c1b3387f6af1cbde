"""Process health (no key), readiness of the database, broker and artifact store (no key), Prometheus metrics
(key)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio
from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import CurrentKey, RuntimeDep
from api.errors import ServiceUnavailable
from api.schemas import Health, Ready, error_responses
from api.services.health import PROBE_TIMEOUT_SECONDS, ping_broker, ping_database
from core.db.errors import describe, is_busy

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process is up (touches nothing else)."""
    return Health()


async def _probe(name: str, check: Callable[[], None]) -> str:
    """"ok", or what is wrong in words fit for anyone: the driver's message (hosts, ports, users) goes to the log."""
    try:
        with anyio.fail_after(PROBE_TIMEOUT_SECONDS + 1):
            # abandon_on_cancel: a probe stuck in a driver call must not hold the answer past the timeout.
            await anyio.to_thread.run_sync(check, abandon_on_cancel=True)
    except TimeoutError:
        log.warning("readiness: %s did not answer within %.0fs", name, PROBE_TIMEOUT_SECONDS + 1)
        return "timed out"
    except Exception as exc:
        log.warning("readiness: %s check failed: %s: %s", name, type(exc).__name__, describe(exc))
        return "busy" if is_busy(exc) else "unreachable"
    return "ok"


@router.get("/readyz", response_model=Ready, responses=error_responses(503))
async def readyz(runtime: RuntimeDep) -> Ready:
    """The database, the broker and the artifact store answer; 503 naming whichever does not (details in the
    server's log)."""
    checks: dict[str, str] = {}

    async def run(name: str, check: Callable[[], None]) -> None:
        checks[name] = await _probe(name, check)

    async with anyio.create_task_group() as group:
        group.start_soon(run, "database", lambda: ping_database(runtime.engine))
        group.start_soon(run, "broker", lambda: ping_broker(runtime.settings.resolved_broker_url))
        group.start_soon(run, "artifacts", runtime.artifacts.ping)
    down = {name: state for name, state in sorted(checks.items()) if state != "ok"}
    if down:
        raise ServiceUnavailable("not ready: " + "; ".join(f"{name} {state}" for name, state in down.items()),
                                 code="not_ready", headers={"Retry-After": "5"})
    return Ready(checks=checks)


@router.get("/metrics", response_class=Response, responses=error_responses(401, 429))
def metrics(runtime: RuntimeDep, _: CurrentKey) -> Response:
    """Prometheus exposition: request counts and latency by route template, jobs submitted."""
    return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)
