"""Stream a multipart upload straight to a staging file under the artifact dir, with a hard byte cap.

Nothing is held in memory beyond one network chunk, and an oversized file is refused (413) as soon as it
passes the cap, not after it has been read. The staging file is removed on every path out unless the
caller moved it away.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
from python_multipart import MultipartParser

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header
from starlette.requests import Request

from api.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType

MAX_TEXT_FIELD_BYTES = 1024


@dataclass
class StagedUpload:
    path: Path
    size: int
    sha256: str
    filename: str | None
    fields: dict[str, str] = field(default_factory=dict)


class _Parts:
    """Callbacks for python-multipart: the one file part goes to `pending` (written off the event loop)."""

    def __init__(self, file_field: str, text_fields: frozenset[str], max_file_bytes: int) -> None:
        self.file_field = file_field
        self.text_fields = text_fields
        self.max_file_bytes = max_file_bytes
        self.header_name = b""
        self.header_value = b""
        self.disposition = b""
        self.part: str | None = None  # name of the part being read
        self.is_file = False
        self.filename: str | None = None
        self.file_parts = 0
        self.file_bytes = 0
        self.pending: list[bytes] = []
        self.text: dict[str, bytearray] = {}

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self.on_part_begin, "on_part_data": self.on_part_data,
            "on_header_field": self.on_header_field, "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end, "on_headers_finished": self.on_headers_finished,
        }

    def on_part_begin(self) -> None:
        self.part, self.is_file, self.disposition = None, False, b""

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        if self.header_name.lower() == b"content-disposition":
            self.disposition = self.header_value
        self.header_name, self.header_value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.disposition)
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if name == self.file_field:
            self.file_parts += 1
            if self.file_parts > 1:
                raise InvalidInput([(name, "send exactly one file per upload")])
            self.is_file = True
            raw_filename = options.get(b"filename")
            self.filename = raw_filename.decode("utf-8", "replace") if raw_filename is not None else None
        elif name in self.text_fields:
            if name in self.text:
                raise InvalidInput([(name, "given more than once")])
            self.text[name] = bytearray()
        else:
            allowed = ", ".join(sorted({self.file_field, *self.text_fields}))
            raise InvalidInput([(name or "body", f"unknown form field; expected {allowed}")])
        self.part = name

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self.is_file:
            self.file_bytes += len(chunk)
            if self.file_bytes > self.max_file_bytes:
                raise PayloadTooLarge(f"{self.file_field}: upload exceeds the limit of {self.max_file_bytes} bytes")
            self.pending.append(chunk)
        elif self.part is not None:
            buffer = self.text[self.part]
            if len(buffer) + len(chunk) > MAX_TEXT_FIELD_BYTES:
                raise InvalidInput([(self.part, f"longer than {MAX_TEXT_FIELD_BYTES} bytes")])
            buffer.extend(chunk)


@asynccontextmanager
async def staged_upload(request: Request, *, staging_dir: Path, max_file_bytes: int, file_field: str = "file",
                        text_fields: frozenset[str] = frozenset()) -> AsyncIterator[StagedUpload]:
    """Parse the request's multipart body into a StagedUpload whose file is removed on exit unless moved."""
    content_type, params = parse_options_header(request.headers.get("content-type"))
    if content_type != b"multipart/form-data" or b"boundary" not in params:
        raise UnsupportedMediaType(f"send the file as multipart/form-data with the field '{file_field}'")

    staging_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=staging_dir, prefix="upload-", suffix=".part")
    path = Path(name)
    try:
        parts = _Parts(file_field, text_fields, max_file_bytes)
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:

            def flush(chunks: list[bytes]) -> None:
                for chunk in chunks:
                    digest.update(chunk)
                    out.write(chunk)

            parser = MultipartParser(params[b"boundary"], parts.callbacks())
            try:
                async for chunk in request.stream():
                    parser.write(chunk)
                    if parts.pending:
                        pending, parts.pending = parts.pending, []
                        await anyio.to_thread.run_sync(flush, pending)
                parser.finalize()
            except FormParserError as exc:
                raise InvalidInput([("body", f"malformed multipart data: {exc}")]) from exc
        if not parts.file_parts:
            raise InvalidInput([(file_field, f"missing: send the file as the multipart field '{file_field}'")])
        fields = {k: v.decode("utf-8", "replace") for k, v in parts.text.items()}
        yield StagedUpload(path=path, size=parts.file_bytes, sha256=digest.hexdigest(),
                           filename=parts.filename, fields=fields)
    finally:
        path.unlink(missing_ok=True)
