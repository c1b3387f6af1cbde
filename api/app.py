"""The FastAPI application: `create_app(settings)` builds one; `app` is the one uvicorn serves.

Importing this module connects to nothing. In embedded mode (SQLite, run_migrations_on_start) the schema
is brought up to date when the app starts; elsewhere `narrownet db upgrade` does that before deploys.
"""

from __future__ import annotations

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
