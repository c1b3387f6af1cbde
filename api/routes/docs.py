"""The API's own description, behind a key like every route but the health probes: /openapi.json and /docs."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from api.deps import CurrentKey

router = APIRouter(include_in_schema=False)


@router.get("/openapi.json")
def openapi(request: Request, _: CurrentKey) -> JSONResponse:
    """The OpenAPI schema (fetch it with the key: `curl -H 'Authorization: Bearer ...' .../openapi.json`)."""
    return JSONResponse(request.app.openapi())


@router.get("/docs")
def docs(request: Request, _: CurrentKey) -> HTMLResponse:
    """Swagger UI; its page loads /openapi.json, so open it with a browser that sends the key."""
    return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{request.app.title} - API docs")
