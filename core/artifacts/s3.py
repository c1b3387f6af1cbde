"""The S3 backend (boto3): any S3-compatible store (AWS S3, MinIO, moto's server, ...).

Endpoint, region and credentials are boto3's own, from the environment: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION (or ~/.aws). Files over 8 MiB go up as multipart uploads, which the
server assembles only on completion; every request carries a checksum the server checks (botocore's default).
Any failure to reach the store, and any 5xx, is StoreUnavailable; a missing key is ArtifactNotFound.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from core.artifacts.errors import ArtifactChanged, ArtifactNotFound, StoreUnavailable
from core.artifacts.keys import check_key
from core.artifacts.store import CHUNK, ArtifactReader

if TYPE_CHECKING:
    from botocore.response import StreamingBody
    from mypy_boto3_s3 import S3Client

MULTIPART_BYTES = 8 << 20
# Short enough that an API request needing a store that is down answers 503 within seconds.
CONNECT_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS, ATTEMPTS = 3.0, 20.0, 2
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_NOT_FOUND = {"NoSuchKey", "NotFound", "404"}


def parse_url(url: str) -> tuple[str, str]:
    """s3://bucket[/prefix] -> (bucket, prefix without surrounding slashes); ValueError naming the problem."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not _BUCKET.fullmatch(parts.netloc) or parts.query or parts.fragment:
        raise ValueError("expected s3://bucket or s3://bucket/prefix (a bucket name of 3-63 lowercase letters, "
                         "digits, '.' or '-')")
    prefix = parts.path.strip("/")
    try:
        if prefix:
            check_key(prefix)
    except ArtifactNotFound as exc:
        raise ValueError(f"the prefix {prefix!r} may hold only letters, digits, '.', '_', '-' and '/'") from exc
    return parts.netloc, prefix


def _raise(exc: Exception, key: str) -> NoReturn:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in _NOT_FOUND or (status == 404 and code != "NoSuchBucket"):
            raise ArtifactNotFound(f"{key}: no such object") from exc
        if status == 412 or code == "PreconditionFailed":
            raise ArtifactChanged(f"{key}: replaced since it was read") from exc
        raise StoreUnavailable(f"{key}: the store answered {status} {code} ({error.get('Message', '')})") from exc
    raise StoreUnavailable(f"{key}: {type(exc).__name__}: {str(exc)[:200]}") from exc


class _BodyReader(ArtifactReader):
    def __init__(self, body: StreamingBody, size: int, version: str, key: str) -> None:
        self.body, self.size, self.version, self.key = body, size, version, key

    def read(self, n: int = CHUNK) -> bytes:
        try:
            return self.body.read(n)
        except (BotoCoreError, OSError) as exc:  # the connection dropped mid-stream, or came up short
            _raise(exc, self.key)

    def close(self) -> None:
        self.body.close()


class S3Store:
    def __init__(self, client: S3Client, bucket: str, prefix: str = "") -> None:
        self.client, self.bucket, self.prefix = client, bucket, prefix
        self.transfer = TransferConfig(multipart_threshold=MULTIPART_BYTES, multipart_chunksize=MULTIPART_BYTES,
                                       max_concurrency=4)

    @classmethod
    def from_url(cls, url: str) -> S3Store:
        bucket, prefix = parse_url(url)
        return cls(make_client(), bucket, prefix)

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def _full(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put_file(self, key: str, source: Path) -> None:
        try:
            self.client.upload_file(str(source), self.bucket, self._full(key), Config=self.transfer)
        except (BotoCoreError, ClientError, Boto3Error) as exc:  # Boto3Error: a failed multipart upload, aborted
            _raise(exc, key)

    def put_files(self, files: Sequence[tuple[str, Path]]) -> None:
        for key, source in files:
            self.put_file(key, source)

    def open(self, key: str, *, version: str | None = None) -> ArtifactReader:
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self._full(key)}
        if version is not None:
            args["IfMatch"] = version
        try:
            response = self.client.get_object(**args)
        except (BotoCoreError, ClientError) as exc:
            _raise(exc, key)
        return _BodyReader(response["Body"], response["ContentLength"], response["ETag"], key)

    def keys(self, prefix: str) -> list[str]:
        full = (self._full(prefix.rstrip("/")) + ("/" if prefix.endswith("/") else "") if prefix
                else f"{self.prefix}/" if self.prefix else "")
        strip = len(self.prefix) + 1 if self.prefix else 0
        found: list[str] = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
                found.extend(item["Key"][strip:] for item in page.get("Contents", []) if "Key" in item)
        except (BotoCoreError, ClientError) as exc:
            _raise(exc, prefix)
        return sorted(found)

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._full(key))
        except (BotoCoreError, ClientError) as exc:
            _raise(exc, key)

    def ping(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError) as exc:
            try:
                _raise(exc, self.location)
            except ArtifactNotFound:
                raise StoreUnavailable(f"bucket {self.bucket!r} does not exist") from exc


def make_client() -> S3Client:
    """A client configured by boto3 from the environment. S3-compatible servers (MinIO, moto) are addressed
    path-style (http://host/bucket/key); AWS itself virtual-hosted (bucket.s3...), the only style it promises."""
    config = Config(connect_timeout=CONNECT_TIMEOUT_SECONDS, read_timeout=READ_TIMEOUT_SECONDS,
                    retries={"mode": "standard", "max_attempts": ATTEMPTS})
    session = boto3.session.Session()
    client = session.client("s3", config=config)
    host = urlsplit(client.meta.endpoint_url).hostname or ""
    if host.endswith(".amazonaws.com"):
        return client
    return session.client("s3", config=config.merge(Config(s3={"addressing_style": "path"})))
