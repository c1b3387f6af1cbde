"""The API's own description, public (it holds no user data): /openapi.json and /docs (Swagger UI, served
from the vendored swagger-ui-dist, so it works offline; its Authorize button takes an API key)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from api.pages import templates

router = APIRouter(include_in_schema=False)


@router.get("/openapi.json")
def openapi(request: Request) -> JSONResponse:
    """The OpenAPI schema."""
    return JSONResponse(request.app.openapi())


@router.get("/docs", response_class=HTMLResponse)
def docs(request: Request) -> Response:
    """Swagger UI for /openapi.json."""
    return templates.TemplateResponse(request, "docs.html", {})
