"""ASGI middleware: request body caps (on the declared Content-Length and again on the bytes actually streamed),
the security headers (CSP) every answer carries, and the list cache emptied by every request that may write."""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import PayloadTooLarge, error_response

# Room for the multipart framing (boundaries, part headers, the name field) around an upload's bytes.
MULTIPART_OVERHEAD = 64 * 1024


class BodySizeLimit:
    def __init__(self, app: ASGIApp, *, max_request_bytes: int, max_upload_bytes: int,
                 upload_paths: frozenset[str]) -> None:
        self.app = app
        self.max_request_bytes = max_request_bytes
        self.max_upload_bytes = max_upload_bytes + MULTIPART_OVERHEAD
        self.upload_paths = upload_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        is_upload = scope["method"] == "POST" and scope["path"].rstrip("/") in self.upload_paths
        limit = self.max_upload_bytes if is_upload else self.max_request_bytes
        what = "upload" if is_upload else "request body"

        declared = _content_length(scope)
        if declared is not None and declared > limit:
            response = error_response(413, "payload_too_large",
                                      f"{what} of {declared} bytes exceeds the limit of {limit} bytes",
                                      headers={"Connection": "close"})
            await response(scope, receive, send)
            return

        received = 0

        async def capped_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Raised inside the app, so the app's error handlers render it (a 413 in our shape).
                    raise PayloadTooLarge(f"{what} exceeds the limit of {limit} bytes")
            return message

        await self.app(scope, capped_receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


# Nothing a page loads may come from outside the service. `data:` images only: Swagger UI's icons and the
# dashboard's empty favicon are inline SVG/PNG. No inline scripts or styles anywhere.
CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
                           "form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]


class SecurityHeaders:
    """The same protective headers on every answer: pages, static files, JSON and errors alike."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []),
                                      *[(n, v) for n, v in SECURITY_HEADERS if n not in names]]
            await send(message)

        await self.app(scope, receive, with_headers)


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class EmptiedByWrites:
    """Calls `empty` (the list cache's, api/services/page_cache.py) when a request that may write answers, before
    its answer starts, and again when it ends: a client that got the answer to its write never reads a page from
    before it. Every write has committed by then (CommittingRoute commits before it answers). A request answered
    401 ran nothing under any key, so it empties nothing: a stream of them cannot keep every list cold."""

    def __init__(self, app: ASGIApp, *, empty: Callable[[], None]) -> None:
        self.app = app
        self.empty = empty

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS:
            await self.app(scope, receive, send)
            return

        unauthenticated = False

        async def emptied_first(message: Message) -> None:
            nonlocal unauthenticated
            if message["type"] == "http.response.start":
                unauthenticated = message["status"] == 401
                if not unauthenticated:
                    self.empty()
            await send(message)

        try:
            await self.app(scope, receive, emptied_first)
        finally:
            if not unauthenticated:
                self.empty()  # also when it failed before answering
