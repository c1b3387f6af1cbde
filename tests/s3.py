"""Test helper: an S3 server on loopback (moto's, narrownet/s3server.py) and a fresh bucket per test.

moto is a dev dependency (requirements.lock), so it is always there; a test that uses the bucket fixture gets
boto3's standard variables (AWS_ENDPOINT_URL, ...) in its environment, as a deployed process would, and the
NARROWNET_ARTIFACT_URL value to give the settings.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from narrownet.s3server import REGION, S3Server


@dataclass
class Bucket:
    server: S3Server
    name: str
    prefix: str = "narrownet"

    @property
    def url(self) -> str:
        """The value of NARROWNET_ARTIFACT_URL."""
        return f"s3://{self.name}/{self.prefix}"

    def client(self) -> Any:
        """A plain boto3 client: what an operator (or an attacker with the store's keys) could do."""
        return boto3.client("s3", endpoint_url=self.server.endpoint, region_name=REGION,
                            aws_access_key_id="narrownet-test", aws_secret_access_key="narrownet-test")

    def object_keys(self) -> list[str]:
        listing = self.client().list_objects_v2(Bucket=self.name)
        return sorted(item["Key"] for item in listing.get("Contents", []))

    def read(self, key: str) -> bytes:
        body: bytes = self.client().get_object(Bucket=self.name, Key=f"{self.prefix}/{key}")["Body"].read()
        return body

    def write(self, key: str, data: bytes) -> None:
        """Replace an object behind the service's back (tampering)."""
        self.client().put_object(Bucket=self.name, Key=f"{self.prefix}/{key}", Body=data)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("s3"))
    server.start()
    yield server
    server.kill()


@pytest.fixture
def s3_bucket(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Bucket:
    s3_server.start()  # an earlier test may have left it stopped
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    bucket = Bucket(s3_server, f"narrownet-{secrets.token_hex(6)}")
    s3_server.create_bucket(bucket.name)
    return bucket
