"""The one JSON error shape, the errors services raise, and the handlers that render every failure in it.

    {"error": {"code": "validation_error", "message": "...",
               "fields": [{"field": "optim.lr", "reason": "..."}]}}

`fields` appears only on validation errors; field paths are dotted (`model.width`), relative to the body.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from pydantic import BaseModel
from sqlalchemy.exc import DataError, DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.suggestions import unknown_field_reason
from core.artifacts.errors import StoreUnavailable
from core.db import errors as db_errors

log = logging.getLogger(__name__)

Handler = Callable[[Request, Exception], Awaitable[JSONResponse]]

FieldError = tuple[str, str]  # (dotted field path, reason)

_CODES_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    410: "gone",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    500: "internal_error",
    503: "service_unavailable",
}


def error_body(code: str, message: str, fields: Sequence[FieldError] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if fields:
        error["fields"] = [{"field": field, "reason": reason} for field, reason in fields]
    return {"error": error}


def error_response(status: int, code: str, message: str, fields: Sequence[FieldError] | None = None,
                   headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message, fields), status_code=status, headers=dict(headers or {}))


class ApiError(StarletteHTTPException):
    """An error with a status, a stable code and a message for the user.

    It is an HTTPException so that one raised while the body is being read (the size cap) passes through
    FastAPI's body parsing unchanged instead of becoming a generic 400.
    """

    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, fields: Sequence[FieldError] | None = None,
                 headers: Mapping[str, str] | None = None, code: str | None = None) -> None:
        super().__init__(status_code=self.status, detail=message, headers=dict(headers or {}) or None)
        self.message = message
        self.fields = list(fields or [])
        if code is not None:
            self.code = code


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ApiError):
    status, code = 403, "forbidden"


class LoginRequired(Exception):
    """A dashboard page asked for without a valid session: answered by a redirect to the sign-in page."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class NotFound(ApiError):
    status, code = 404, "not_found"


class Conflict(ApiError):
    status, code = 409, "conflict"


class Gone(ApiError):
    status, code = 410, "gone"


class PayloadTooLarge(ApiError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(ApiError):
    status, code = 415, "unsupported_media_type"


class InvalidInput(ApiError):
    """422 naming each offending field."""

    status, code = 422, "validation_error"

    def __init__(self, fields: Sequence[FieldError], message: str | None = None) -> None:
        summary = "; ".join(f"{field}: {reason}" for field, reason in fields)
        super().__init__(message or summary, fields=fields)


class TooManyRequests(ApiError):
    status, code = 429, "rate_limited"


class ServiceUnavailable(ApiError):
    status, code = 503, "service_unavailable"


# Contention clears in moments; an outage (a restart) takes longer.
BUSY_RETRY_AFTER_SECONDS, UNAVAILABLE_RETRY_AFTER_SECONDS = 1, 5


class DatabaseBusy(ServiceUnavailable):
    """Every turn at the database was taken for longer than we wait: contention, not an outage."""

    code = "database_busy"

    def __init__(self, message: str = "the database is busy with other requests; retry shortly") -> None:
        super().__init__(message, headers={"Retry-After": str(BUSY_RETRY_AFTER_SECONDS)})


# ------------------------------------------------------------------------------------ validation errors
# The spec's model validators put the field in the message ("model.width: ... must be even"), since a
# model-level check has no `loc` of its own; pydantic prefixes such messages with "Value error, ".
_FIELD_IN_MESSAGE = re.compile(r"^(?:Value error, )?([A-Za-z_]\w*(?:\.\w+)*): (.+)$", re.S)


def _walk_loc(loc: Sequence[Any], body: Any) -> list[str]:
    """Dotted path for a pydantic `loc`, without "body" and without the tags of discriminated unions.

    A tagged union puts the tag in the loc (`model.shallow.width` for `{"model": {"arch": "shallow"}}`);
    walking the submitted body tells a tag (a value of the object, not one of its keys) from a field.
    """
    parts: list[str] = []
    node = body
    for i, item in enumerate(loc):
        if i == 0 and item == "body":
            continue
        if isinstance(node, dict) and isinstance(item, str) and item not in node and item in {
            v for v in node.values() if isinstance(v, str)
        }:
            continue  # the union tag
        parts.append(str(item))
        if isinstance(node, dict):
            node = node.get(item)
        elif isinstance(node, list) and isinstance(item, int) and 0 <= item < len(node):
            node = node[item]
        else:
            node = None
    return parts


def _spec_path(loc: list[str], named: list[str]) -> str:
    """Join the loc down to the job spec with the path the message names from the spec's top: loc ["base",
    "optim"] and "optim.lr" make "base.optim.lr"; loc ["optim"] and "optim.lr" make "optim.lr"."""
    for k in range(len(loc) + 1):
        if named[:len(loc) - k] == loc[k:]:
            return ".".join([*loc[:k], *named])
    return ".".join(named)


def validation_fields(errors: Iterable[Mapping[str, Any]], body: Any = None,
                      body_models: tuple[type[BaseModel], ...] = ()) -> list[FieldError]:
    fields: list[FieldError] = []
    listed: set[tuple[str, ...]] = set()  # objects whose allowed field names were already given
    for err in errors:
        message = str(err.get("msg", "invalid value"))
        if err.get("type") == "json_invalid":
            ctx = err.get("ctx") or {}
            detail = ctx.get("error", "invalid JSON")
            fields.append(("body", f"malformed JSON: {detail} (at position {err.get('loc', ['', '?'])[-1]})"))
            continue
        parts = _walk_loc(err.get("loc", ()), body)
        named = _FIELD_IN_MESSAGE.match(message)
        if named and err.get("type") == "value_error":
            # The message carries the full path from the top of the job spec, which may sit inside the body (a
            # sweep's "base"); `loc` reaches the model that raised it.
            fields.append((_spec_path(parts, named.group(1).split(".")), named.group(2)))
            continue
        if err.get("type") == "extra_forbidden":
            parent = tuple(parts[:-1])
            message = unknown_field_reason(parts, body_models, list_allowed=parent not in listed) or message
            listed.add(parent)
        fields.append((".".join(parts) or "body", message))
    return fields


# ---------------------------------------------------------------------------------------------- handlers
async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.fields, exc.headers)


def _unparsable_body_reason(cause: BaseException) -> str:
    # FastAPI turns every body-parsing failure other than a JSON syntax error into a bare 400.
    if isinstance(cause, RecursionError):
        return "malformed JSON: nested too deeply"
    if isinstance(cause, UnicodeDecodeError):
        return "malformed JSON: the body is not valid UTF-8"
    if isinstance(cause, ValueError) and "digits" in str(cause):
        return "malformed JSON: a number has too many digits"
    return "malformed JSON: the body could not be parsed"


async def _http_exception(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(exc, ApiError):
        return await _api_error(_, exc)
    if exc.status_code == 400 and exc.__cause__ is not None:
        reason = _unparsable_body_reason(exc.__cause__)
        return error_response(422, "validation_error", f"body: {reason}", [("body", reason)])
    code = _CODES_BY_STATUS.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    return error_response(exc.status_code, code, message, headers=exc.headers)


# A body of a megabyte can hold ~100k unknown keys; an error per key would answer with megabytes.
MAX_REPORTED_FIELDS = 50


# A JSON body sent as text/plain (curl -d without -H) reaches validation as a string; say what to send instead.
_NOT_AN_OBJECT = {"model_attributes_type", "dict_type", "model_type"}


def _not_json(request: Request, errors: Sequence[Mapping[str, Any]]) -> JSONResponse | None:
    content_type = request.headers.get("content-type", "")
    if "json" in content_type or not any(e.get("type") in _NOT_AN_OBJECT and tuple(e.get("loc", ())) == ("body",)
                                         for e in errors):
        return None
    reason = (f"send the body as JSON with the header 'Content-Type: application/json' (it came as "
              f"{content_type.split(';')[0] or 'no content type'!r})")
    return error_response(415, "unsupported_media_type", f"body: {reason}", [("body", reason)])


def _request_validation(body_models: tuple[type[BaseModel], ...]) -> Handler:
    async def handle(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        return _not_json(request, errors) or _validation_response(errors, exc.body, body_models)

    return handle


def _validation_response(errors: Sequence[Mapping[str, Any]], body: Any,
                         body_models: tuple[type[BaseModel], ...]) -> JSONResponse:
    fields = validation_fields(errors[:MAX_REPORTED_FIELDS], body, body_models)
    message = "; ".join(f"{field}: {reason}" for field, reason in fields)
    if len(errors) > MAX_REPORTED_FIELDS:
        message += f"; and {len(errors) - MAX_REPORTED_FIELDS} more errors"
    return error_response(422, "validation_error", message, fields)


async def _database_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, (DBAPIError, PoolTimeoutError))
    if isinstance(exc, DataError):
        # A value the database refuses (NUL in text, out of range) came from the request; validation at the
        # edge should have caught it, so it is logged, but it is the client's error, not a server failure.
        log.warning("database refused a value: %s", exc)
        return error_response(422, "validation_error", "a value in the request cannot be stored "
                              "(out of range, or text containing NUL)", [("body", "value refused by the database")])
    if db_errors.is_busy(exc):
        log.warning("database busy: %s", db_errors.describe(exc))
        busy = DatabaseBusy()
        return error_response(busy.status, busy.code, busy.message, headers=busy.headers)
    if db_errors.is_unavailable(exc):
        log.warning("database unavailable: %s", db_errors.describe(exc))
        return error_response(503, "database_unavailable", "the database is unreachable; retry shortly",
                              headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_SECONDS)})
    log.exception("database error")
    return error_response(500, "internal_error", "internal error")


async def _login_required(_: Request, exc: Exception) -> RedirectResponse:
    assert isinstance(exc, LoginRequired)
    return RedirectResponse(f"/ui/login?{urlencode({'next': exc.next_path})}", status_code=303)
async def _store_unavailable(_: Request, exc: Exception) -> JSONResponse:
    log.warning("artifact store unavailable: %s", exc)
    return error_response(503, "artifact_store_unavailable", "the artifact store is unreachable; retry shortly",
                          headers={"Retry-After": "5"})


async def _unhandled(_: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error", exc_info=exc)
    return error_response(500, "internal_error", "internal error")


def install_error_handlers(app: FastAPI, body_models: tuple[type[BaseModel], ...] = ()) -> None:
    """`body_models`: the request body models, whose field names feed "did you mean" suggestions."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(RequestValidationError, _request_validation(body_models))
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(PoolTimeoutError, _database_error)
    app.add_exception_handler(LoginRequired, _login_required)
    app.add_exception_handler(StoreUnavailable, _store_unavailable)
    app.add_exception_handler(Exception, _unhandled)
