"""The artifact store's two backends, against a real directory and a real S3 server (moto's, on loopback):
objects appear only complete, are read back verified, are never reached through a key a user could shape, and
an S3 store that is down says so (StoreUnavailable) instead of answering wrongly."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from core.artifacts.errors import ArtifactChanged, ArtifactMismatch, ArtifactNotFound, StoreUnavailable
from core.artifacts.keys import dataset_key, job_prefix
from core.artifacts.local import LocalStore
from core.artifacts.s3 import MULTIPART_BYTES, S3Store
from core.artifacts.store import ArtifactStore, store_for
from core.artifacts.verified import fetch_verified, open_verified, read_small
from core.settings import Settings
from tests.s3 import Bucket

KEY = "jobs/0123abcd/attempt-1/ckpt-000000100.safetensors"
TRICKS = ["../secret.txt", "jobs/../../secret.txt", "/etc/passwd", "jobs//x", "jobs/./x", "jobs\\..\\x",
          "x\x00.npz", "", ".hidden", "jobs/%2e%2e/x", "a" * 300, "~root/x", "jobs/x/",
          "jobs/x\n"]  # `$` alone would let a trailing newline through


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "local":
        return LocalStore(tmp_path / "artifacts")
    bucket: Bucket = request.getfixturevalue("s3_bucket")
    request.node.bucket = bucket
    return S3Store.from_url(bucket.url)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def put_bytes(store: ArtifactStore, key: str, data: bytes, tmp_path: Path) -> None:
    source = tmp_path / f"source-{sha256(data)[:8]}"
    source.write_bytes(data)
    store.put_file(key, source)


def tamper(store: ArtifactStore, request: pytest.FixtureRequest, key: str, data: bytes) -> None:
    if isinstance(store, LocalStore):
        (store.root / key).write_bytes(data)  # in place, as a bad disk or an intruder would
    else:
        request.node.bucket.write(key, data)


def test_a_file_goes_in_and_comes_back_verified_and_listed(store: ArtifactStore, tmp_path: Path) -> None:
    data = os.urandom(2 * MULTIPART_BYTES + 12345)  # S3: a multipart upload of three parts
    put_bytes(store, KEY, data, tmp_path)
    put_bytes(store, "datasets/abc.npz", b"npz", tmp_path)

    assert store.keys("jobs/0123abcd/") == [KEY]
    assert store.keys("") == ["datasets/abc.npz", KEY]
    with open_verified(store, KEY, sha256(data)) as reader:
        assert reader.size == len(data)
        assert b"".join(reader.chunks()) == data
    assert fetch_verified(store, KEY, tmp_path / "copy" / "w.safetensors", sha256(data)) == len(data)
    assert (tmp_path / "copy" / "w.safetensors").read_bytes() == data
    assert read_small(store, "datasets/abc.npz", 3) == b"npz"
    with pytest.raises(ValueError, match="larger than 2 bytes"):
        read_small(store, "datasets/abc.npz", 2)

    store.delete(KEY)
    store.delete(KEY)  # nothing there: nothing happens
    assert store.keys("jobs/") == []
    with pytest.raises(ArtifactNotFound):
        store.open(KEY)


def test_files_put_together_are_each_stored_whole_and_a_bad_one_leaves_none_half_written(
        store: ArtifactStore, tmp_path: Path) -> None:
    weights, meta = tmp_path / "ckpt.safetensors", tmp_path / "ckpt.json"
    weights.write_bytes(b"weights")
    meta.write_bytes(b"{}")
    store.put_files([(KEY, weights), (f"{KEY}.json", meta)])
    assert store.keys("jobs/0123abcd/") == [KEY, f"{KEY}.json"]
    with open_verified(store, f"{KEY}.json", sha256(b"{}")) as reader:
        assert b"".join(reader.chunks()) == b"{}"

    with pytest.raises(OSError):
        store.put_files([(f"{KEY}.other", weights), (f"{KEY}.missing", tmp_path / "missing")])
    if isinstance(store, LocalStore):  # nothing renamed into place, no temp file left (S3: the first one is in)
        assert store.keys("jobs/0123abcd/") == [KEY, f"{KEY}.json"]
        assert not [p for p in (store.root / KEY).parent.iterdir() if p.name.startswith(".")]


def test_a_tampered_object_is_never_served_nor_fetched(store: ArtifactStore, tmp_path: Path,
                                                         request: pytest.FixtureRequest) -> None:
    data = os.urandom(4096)
    put_bytes(store, KEY, data, tmp_path)
    flipped = bytes([data[0] ^ 1]) + data[1:]
    tamper(store, request, KEY, flipped)

    with pytest.raises(ArtifactMismatch, match="does not match recorded") as caught:
        open_verified(store, KEY, sha256(data))
    assert caught.value.actual == sha256(flipped)
    dest = tmp_path / "fetched" / "w.safetensors"
    with pytest.raises(ArtifactMismatch):
        fetch_verified(store, KEY, dest, sha256(data))
    assert list(dest.parent.iterdir()) == []  # neither the file nor its temp


def test_an_object_replaced_between_two_reads_is_not_passed_off_as_the_first(store: ArtifactStore, tmp_path: Path,
                                                                             request: pytest.FixtureRequest) -> None:
    put_bytes(store, KEY, b"first", tmp_path)
    with store.open(KEY) as first:
        version = first.version
    put_bytes(store, KEY, b"second", tmp_path)
    with pytest.raises(ArtifactChanged):
        store.open(KEY, version=version)


def test_a_write_in_progress_is_invisible(store: ArtifactStore, tmp_path: Path,
                                          request: pytest.FixtureRequest) -> None:
    if isinstance(store, LocalStore):
        # What a crash in the middle of put_file leaves: a hidden temp file beside the target.
        target = store.root / KEY
        target.parent.mkdir(parents=True)
        (target.parent / f".{target.name}.0123.tmp").write_bytes(b"half")
    else:
        # A multipart upload with its parts sent but never completed.
        bucket: Bucket = request.node.bucket
        client = bucket.client()
        upload = client.create_multipart_upload(Bucket=bucket.name, Key=f"{bucket.prefix}/{KEY}")
        client.upload_part(Bucket=bucket.name, Key=f"{bucket.prefix}/{KEY}", UploadId=upload["UploadId"],
                           PartNumber=1, Body=b"x" * MULTIPART_BYTES)
    assert store.keys("") == []
    with pytest.raises(ArtifactNotFound):
        store.open(KEY)


def test_keys_that_could_leave_the_store_are_refused(store: ArtifactStore, tmp_path: Path,
                                                     request: pytest.FixtureRequest) -> None:
    source = tmp_path / "source"
    source.write_bytes(b"data")
    if isinstance(store, LocalStore):
        (tmp_path / "secret.txt").write_text("do not serve me")
    for trick in TRICKS:
        with pytest.raises(ArtifactNotFound):
            store.open(trick)
        with pytest.raises(ArtifactNotFound):
            store.put_file(trick, source)
        with pytest.raises(ArtifactNotFound):
            store.delete(trick)
    if isinstance(store, LocalStore):
        assert not store.root.exists() or list(store.root.rglob("*")) == []
        assert (tmp_path / "secret.txt").read_text() == "do not serve me"
    else:
        assert request.node.bucket.object_keys() == []


def test_a_local_store_serves_regular_files_only(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "artifacts")
    (tmp_path / "outside").write_bytes(b"secret")
    (store.root / "jobs").mkdir(parents=True)
    (store.root / "jobs" / "link").symlink_to(tmp_path / "outside")
    (store.root / "jobs" / "dir").mkdir()
    os.mkfifo(store.root / "jobs" / "fifo")
    for key in ("jobs/link", "jobs/dir", "jobs/fifo"):
        with pytest.raises(ArtifactNotFound):
            store.open(key)


def test_an_s3_store_that_is_down_is_unavailable_until_it_is_back(s3_bucket: Bucket, tmp_path: Path) -> None:
    store = S3Store.from_url(s3_bucket.url)
    put_bytes(store, KEY, b"kept", tmp_path)
    s3_bucket.server.stop()
    try:
        for operation in (store.ping, lambda: store.open(KEY), lambda: store.keys(""),
                          lambda: put_bytes(store, KEY, b"new", tmp_path), lambda: store.delete(KEY)):
            with pytest.raises(StoreUnavailable):
                operation()
    finally:
        s3_bucket.server.start()
    store.ping()
    assert b"".join(open_verified(store, KEY, sha256(b"kept")).chunks()) == b"kept"


def test_a_missing_bucket_is_unavailable_not_an_empty_store(s3_bucket: Bucket) -> None:
    store = S3Store.from_url("s3://no-such-bucket-here")
    with pytest.raises(StoreUnavailable, match="does not exist"):
        store.ping()
    with pytest.raises(StoreUnavailable):
        store.open(KEY)


class TestTheOneSetting:
    def test_unset_is_the_local_directory_and_s3_urls_pick_s3(self, tmp_path: Path, s3_bucket: Bucket) -> None:
        local = store_for(Settings(home=tmp_path))
        assert isinstance(local, LocalStore) and local.root == tmp_path.resolve() / "artifacts"
        assert isinstance(store_for(Settings(home=tmp_path, artifact_url="")), LocalStore)  # compose's unset
        s3 = store_for(Settings(home=tmp_path, artifact_url=s3_bucket.url))
        assert isinstance(s3, S3Store) and s3.location == s3_bucket.url

    @pytest.mark.parametrize("url", ["file:///tmp/x", "s3://", "s3://UPPER", "s3://b", "s3://bucket/../x",
                                     "s3://bucket/p?x=1", "http://bucket/p"])
    def test_a_bad_url_is_refused_naming_the_setting(self, url: str, tmp_path: Path) -> None:
        with pytest.raises(ValidationError, match="artifact_url"):
            Settings(home=tmp_path, artifact_url=url)


def test_a_key_is_built_only_from_a_whole_server_made_id() -> None:
    assert job_prefix("a" * 64) == f"jobs/{'a' * 64}/"
    assert dataset_key("Ab_9-z") == "datasets/Ab_9-z.npz"
    for bad in ("abc\n", "", "a" * 65, "a/b", "a.b", "../x"):
        with pytest.raises(ValueError, match="not a server-made id"):
            job_prefix(bad)
        with pytest.raises(ValueError, match="not a server-made id"):
            dataset_key(bad)
