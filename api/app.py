"""The FastAPI application: `create_app(settings)` builds one; `create_server_app()` is the one a server process
serves (uvicorn --factory); `app` is one for tools that want a module attribute.

Importing this module connects to nothing. In embedded mode (SQLite, run_migrations_on_start) the schema
is brought up to date when the app starts; elsewhere `narrownet db upgrade` does that before deploys.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from api.errors import install_error_handlers
from api.middleware import BodySizeLimit, EmptiedByWrites, SecurityHeaders
from api.observability import MetricsMiddleware
from api.pages import STATIC_DIR
from api.routes import datasets, docs, health, jobs, plan, series, sweeps, ui_auth, ui_pages
from api.runtime import Runtime
from core.db import migrate
from core.settings import Settings, get_settings
from trainer.spec import JobSpec

# The collector's first generation in a server process (CPython's default is 700 in 3.11). Under load, each
# collection walked every object of the requests in flight, hundreds of times a second: ~5% of the API's CPU
# (bench/RESULTS.md). Most of a request's objects are freed by reference counting, so at 10,000 it runs a few times
# a minute; cyclic garbage still goes, only later.
GC_FIRST_GENERATION = 10_000


def tune_collector() -> None:
    """For a process that serves the app and nothing else, once it is built: what exists now (modules, the app,
    its engines) lives as long as the process, so it is frozen out of every later collection, and the first
    generation is raised to GC_FIRST_GENERATION. Not for a process that is someone else's (tests, an embedding)."""
    gc.freeze()
    first, *older = gc.get_threshold()
    gc.set_threshold(max(first, GC_FIRST_GENERATION), *older)


def create_server_app() -> FastAPI:
    """create_app with the settings from the environment, and the process's collector tuned for serving it
    (tune_collector): what compose, `narrownet serve` and the cluster run with uvicorn --factory."""
    served = create_app()
    tune_collector()
    return served


def _embedded_upgrade(runtime: Runtime) -> None:
    url = runtime.engine.url
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(runtime.settings.resolved_database_url)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    runtime = Runtime.from_settings(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if settings.run_migrations_on_start and runtime.engine.dialect.name == "sqlite":
            await run_in_threadpool(_embedded_upgrade, runtime)
        try:
            yield
        finally:
            await runtime.aclose()
            runtime.close()

    app = FastAPI(
        title="narrownet",
        summary="Train narrow neural networks in the regular and constrained regimes of 'When Expressivity "
                "Meets Trainability' (NeurIPS 2021).",
        version="0.1.0",
        lifespan=lifespan,
        # Served by api.routes.docs from the vendored Swagger UI (the default page loads it from a CDN).
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.runtime = runtime
    install_error_handlers(app, body_models=(JobSpec,))
    # Added last = outermost: metrics see every answer, including a 413 from the size cap.
    app.add_middleware(BodySizeLimit, max_request_bytes=settings.max_request_bytes,
                       max_upload_bytes=settings.max_upload_bytes,
                       upload_paths=frozenset({datasets.router.prefix}))
    app.add_middleware(EmptiedByWrites, empty=runtime.pages.empty)
    app.add_middleware(MetricsMiddleware, metrics=runtime.metrics)
    app.add_middleware(SecurityHeaders)

    for router in (health.router, jobs.router, sweeps.router, plan.router, series.router, datasets.router,
                   docs.router, ui_auth.router, ui_pages.router):
        app.include_router(router)
    # The dashboard's scripts, styles and vendored libraries: public, like /docs (no user data in them).
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


app = create_app()
