"""Promise 8, names and ids: path-traversal tricks (../, %2e%2e%2f, %252e%252e%252f, backslashes, NUL, very long
ids) in job ids, dataset ids, dataset names and file names, spec names and Idempotency-Key are a 404/422/201, never
a 500, and no file outside the artifact directory is opened, created, renamed or removed.

Every file operation the process makes while the requests run is recorded with a Python audit hook (which sees
`open`, `os.rename`, `os.remove`, `os.mkdir`, ... wherever they are called from).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest

from core.db.models import Checkpoint
from tests.security.conftest import SPEC, Api, User, npz_bytes

pytestmark = pytest.mark.anyio

TRICKS = [
    "../../../../etc/passwd", "..%2f..%2f..%2fetc%2fpasswd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "%252e%252e%252fetc%252fpasswd", "..\\..\\..\\etc\\passwd", "....//....//etc/passwd", "..", ".",
    "/etc/passwd", "x\x00.npz", "%00", "~root", "$HOME", "a" * 5000, "\u2025\u2215etc", "..%c0%afetc",
]

_FILE_EVENTS = {"open", "os.rename", "os.remove", "os.rmdir", "os.mkdir", "os.symlink", "os.link",
                "os.truncate", "os.chmod", "os.chown", "os.utime", "os.listdir", "os.scandir", "shutil.rmtree",
                "shutil.move", "shutil.copyfile"}


class _FileAudit:
    """One audit hook for the whole process (they cannot be removed); records only while `recording`."""

    def __init__(self) -> None:
        self.recording = False
        self.paths: list[tuple[str, str]] = []
        sys.addaudithook(self._hook)

    def _hook(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.recording or event not in _FILE_EVENTS:
            return
        for arg in args[:2] if event in {"os.rename", "os.symlink", "os.link", "shutil.move"} else args[:1]:
            if isinstance(arg, (str, bytes, os.PathLike)):
                self.paths.append((event, os.path.abspath(os.fsdecode(arg))))

    def touched(self) -> Iterator[tuple[str, str]]:
        yield from self.paths


_AUDIT: _FileAudit | None = None


@pytest.fixture
def file_audit() -> Iterator[_FileAudit]:
    global _AUDIT
    _AUDIT = _AUDIT or _FileAudit()
    _AUDIT.paths.clear()
    _AUDIT.recording = True
    try:
        yield _AUDIT
    finally:
        _AUDIT.recording = False


def _outside_the_artifact_dir(audit: _FileAudit, artifact_dir: Path) -> list[tuple[str, str]]:
    # Reading Python's own modules (a lazy import) is not the service touching files; nor is reading the key
    # revocation mark, a fixed name beside the SQLite database that every authenticated request reads.
    code_roots = tuple(str(Path(p).resolve()) for p in sys.path if p) + (sys.prefix, sys.base_prefix)
    strays = []
    for event, path in audit.touched():
        resolved = str(Path(path).resolve())
        if Path(resolved).is_relative_to(artifact_dir):
            continue
        if event == "open" and Path(resolved).name == "keys.revocation-mark":
            continue
        if event == "open" and resolved.endswith((".py", ".pyc", ".so")) and resolved.startswith(code_roots):
            continue
        strays.append((event, path))
    return strays


@pytest.fixture
def bait(tmp_path: Path, api: Api) -> Path:
    """A file beside the artifact dir that several tricks point at."""
    path = api.settings.resolved_artifact_dir.parent / "secret.txt"
    path.write_text("do not serve me")
    return path


def _variants(trick: str) -> set[str]:
    """The trick with slashes and control characters encoded (its own %-sequences reach the server as sent), and
    fully percent-encoded (dots too, or the client would remove the dot segments itself)."""
    return {quote(trick, safe=".%\\~$"), quote(trick, safe="").replace(".", "%2E")}


class TestTraversalTricks:
    async def test_ids_in_paths(self, api: Api, alice: User, bait: Path, file_audit: _FileAudit) -> None:
        for trick in TRICKS + ["../secret.txt", "..%2Fsecret.txt"]:
            for sent in _variants(trick):
                for path in (f"/v1/jobs/{sent}", f"/v1/jobs/{sent}/metrics", f"/v1/jobs/{sent}/checkpoint",
                             f"/v1/jobs/{sent}/checkpoint/meta", f"/v1/datasets/{sent}"):
                    response = await api.client.get(path, headers=alice.headers)
                    if response.request.url.path.rstrip("/") in ("/v1/jobs", "/v1/datasets"):  # client dropped "."
                        continue
                    assert response.status_code in (404, 422), (path, response.status_code)
                    assert "do not serve me" not in response.text
                cancel = await api.client.post(f"/v1/jobs/{sent}/cancel", headers=alice.headers)
                assert cancel.status_code in (404, 405, 422), (sent, cancel.status_code)
        assert _outside_the_artifact_dir(file_audit, api.settings.resolved_artifact_dir) == []

    async def test_names_and_keys_in_bodies_and_headers(self, api: Api, alice: User, bait: Path,
                                                        file_audit: _FileAudit) -> None:
        for trick in TRICKS:
            for body, field in (({**SPEC, "name": trick}, "name"),
                                ({**SPEC, "data": {"source": "dataset", "id": trick}}, "data.id"),
                                ({**SPEC, "data": {"source": "npz", "path": trick}}, "data.")):
                response = await api.client.post("/v1/jobs", json=body, headers=alice.headers)
                assert response.status_code == 422, (trick, field, response.text)
                named = {f["field"] for f in response.json()["error"]["fields"]}
                assert any(n.startswith(field) for n in named), response.text
            listing = await api.client.get("/v1/jobs", params={"name": trick}, headers=alice.headers)
            assert listing.status_code == 422

            key = trick.encode("ascii", "backslashreplace").replace(b"\x00", b"")[:200]
            keyed = await api.client.post("/v1/jobs", json=SPEC, headers={**alice.headers, "Idempotency-Key": key})
            assert keyed.status_code in (201, 422), (trick, keyed.text)  # a key is an opaque string, never a path

        assert _outside_the_artifact_dir(file_audit, api.settings.resolved_artifact_dir) == []

    async def test_dataset_names_and_file_names(self, api: Api, alice: User, bait: Path,
                                                file_audit: _FileAudit) -> None:
        data = npz_bytes(X=np.ones((6, 3), dtype=np.float32), y=np.zeros(6, dtype=np.float32))
        artifacts = api.settings.resolved_artifact_dir
        for trick in TRICKS:
            named = await api.client.post("/v1/datasets", data={"name": trick}, files={"file": ("d.npz", data)},
                                          headers=alice.headers)
            assert named.status_code == 422 and named.json()["error"]["fields"][0]["field"] == "name", named.text
            # The file name is only a label: the upload is stored under its server-made id.
            filename = trick.replace("\x00", "")
            labelled = await api.client.post("/v1/datasets", files={"file": (filename, data)},
                                             headers=alice.headers)
            if labelled.status_code == 422:  # a 5000-character file name overflows the part's headers
                assert labelled.json()["error"]["fields"][0]["field"] == "body", labelled.text
                continue
            assert labelled.status_code == 201, (trick, labelled.text)
            dataset = labelled.json()
            assert not {"/", "\\", "\x00"} & set(dataset["name"]), dataset["name"]
            assert (artifacts / "datasets" / f"{dataset['id']}.npz").read_bytes() == data
        assert _outside_the_artifact_dir(file_audit, artifacts) == []
        assert bait.read_text() == "do not serve me"
        # The broker's SQLite file runs in WAL mode: its -wal and -shm companions exist while it is open.
        beside = {p.name for p in artifacts.parent.iterdir()} - {"broker.db-wal", "broker.db-shm"}
        assert sorted(beside) == sorted(["artifacts", "secret.txt", "broker.db"])

    async def test_a_checkpoint_row_pointing_outside_is_never_opened(self, api: Api, alice: User, bait: Path,
                                                                     file_audit: _FileAudit) -> None:
        with api.session() as s:
            s.add(Checkpoint(job_id=alice.job_id, step=99, attempt=1, sha256="0" * 64, size_bytes=15,
                             relpath="../secret.txt"))
        for suffix in ("/checkpoint", "/checkpoint/meta"):
            response = await api.client.get(f"/v1/jobs/{alice.job_id}{suffix}", headers=alice.headers)
            assert response.status_code == 410 and "do not serve me" not in response.text
        assert _outside_the_artifact_dir(file_audit, api.settings.resolved_artifact_dir) == []
