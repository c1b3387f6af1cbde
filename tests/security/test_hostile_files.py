"""Promise 8, files: hostile .npz uploads (pickles, zip bombs, lying headers, broken zips) are a 422 naming the
key with memory bounded; hostile or torn safetensors checkpoints raise CheckpointError when loaded for resume and
are never served unverified (nor crash the download route).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import random
import struct
import tracemalloc
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.db.models import Checkpoint
from tests.security.conftest import Api, ApiFactory, User, npz_bytes, write_checkpoint
from trainer.data.errors import DataError
from trainer.data.npz import inspect_npz

pytestmark = pytest.mark.anyio

MiB = 1 << 20


# ------------------------------------------------------------------------------------------ .npz makers
def npy(shape: tuple[int, ...], data: bytes, descr: str = "<f8") -> bytes:
    """An .npy member: a real header (which may lie about `shape`) followed by `data`."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue() + data


def zip_of(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def lying_zip(name: str, head: bytes, inflated_zeros: int, declared_size: int) -> bytes:
    """One deflated member whose stream inflates to `head` + `inflated_zeros` zero bytes while the directory
    declares `declared_size` bytes (with the CRC of what that many bytes would be)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    parts = [compressor.compress(head)]
    for _ in range(inflated_zeros // MiB):
        parts.append(compressor.compress(b"\0" * MiB))
    parts.append(compressor.flush())
    deflated = b"".join(parts)
    crc = zlib.crc32((head + b"\0" * max(declared_size - len(head), 0))[:declared_size])
    encoded = name.encode()
    local = struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 8, 0, 0, crc, len(deflated), declared_size,
                        len(encoded), 0) + encoded
    central = struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, 8, 0, 0, crc, len(deflated),
                          declared_size, len(encoded), 0, 0, 0, 0, 0, 0) + encoded
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 1, 1, len(central), len(local) + len(deflated), 0)
    return local + deflated + central + end


class _Payload:
    """Unpickling this creates `target`: proof that someone ran pickle on our bytes."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.target), "w"))


def good_arrays() -> dict[str, np.ndarray]:
    return {"X": np.arange(24, dtype=np.float32).reshape(6, 4), "y": np.arange(6, dtype=np.int64) % 2}


def hostile_npz(kind: str, tmp_path: Path) -> tuple[bytes, str]:
    """(file bytes, the field the 422 must name)."""
    y = npy((6,), np.zeros(6).tobytes())
    if kind == "object array":
        return npz_bytes(X=np.array([{"a": 1}] * 6, dtype=object), y=np.zeros(6)), "X"
    if kind == "pickle that runs code":
        payload = pickle.dumps(np.array([_Payload(tmp_path / "pwned")], dtype=object))
        return zip_of({"X.npy": npy((1,), payload, descr="|O"), "y.npy": y}), "X"
    if kind == "raw pickle as a member":
        return zip_of({"X.npy": pickle.dumps(_Payload(tmp_path / "pwned")), "y.npy": y}), "X"
    if kind == "zip bomb":
        return zip_of({"X.npy": npy((64 * MiB // 8,), b"\0" * (64 * MiB)), "y.npy": y}, zipfile.ZIP_DEFLATED), "X"
    if kind == "bomb that lies about its size":
        return lying_zip("X.npy", npy((16,), b""), 64 * MiB, declared_size=len(npy((16,), b"")) + 128), "y"
    if kind == "header claims a huge shape":
        return zip_of({"X.npy": npy((2**25, 4), b"\0" * 64), "y.npy": y}), "X"  # 1 GiB of float64
    if kind == "header claims a negative shape":
        return zip_of({"X.npy": npy((-6, 4), b"\0" * 64), "y.npy": y}), "X"
    if kind == "structured dtype":
        return zip_of({"X.npy": npy((6,), b"\0" * 48, descr=[("a", "<f8")]), "y.npy": y}), "X"  # type: ignore[arg-type]
    if kind == "not a zip":
        return b"\x89PNG\r\n\x1a\n" + os.urandom(256), "file"
    if kind == "truncated zip":
        whole = npz_bytes(**good_arrays())
        return whole[: len(whole) // 2], "file"
    if kind == "corrupt member data":
        whole = bytearray(npz_bytes(**good_arrays()))
        start = whole.index(b"\x93NUMPY") + 128  # inside X's data: the CRC no longer matches
        whole[start:start + 8] = b"\xff" * 8
        return bytes(whole), "X"
    if kind == "traversal member name":
        return zip_of({"../../../x.npy": y, "X.npy": y, "y.npy": y}), "../../../x"
    if kind == "member twice":
        return zip_of({"X.npy": y, "y.npy": y}) [:-22] + zip_of({"X.npy": y})[-22:], "file"
    raise AssertionError(kind)


KINDS = ["object array", "pickle that runs code", "raw pickle as a member", "zip bomb",
         "bomb that lies about its size", "header claims a huge shape", "header claims a negative shape",
         "structured dtype", "not a zip", "truncated zip", "corrupt member data", "traversal member name"]


class TestHostileNpz:
    @pytest.mark.parametrize("kind", KINDS)
    async def test_422_naming_the_key_with_memory_bounded(self, api: Api, tmp_path: Path, kind: str) -> None:
        data, field = hostile_npz(kind, tmp_path)
        assert len(data) < 2 * MiB
        user = api.new_user()
        tracemalloc.start()
        try:
            response = await api.client.post("/v1/datasets", files={"file": ("evil.npz", data)}, headers=user)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["fields"][0]["field"] == field, error
        assert peak < 24 * MiB, f"{kind}: peak {peak / MiB:.0f} MiB while validating"
        assert not (tmp_path / "pwned").exists(), "the upload was unpickled"
        artifacts = api.settings.resolved_artifact_dir
        assert not list((artifacts / "tmp").iterdir()) and not (artifacts / "datasets").exists()
        assert (await api.client.get("/v1/datasets", headers=user)).json()["total"] == 0

    async def test_uncompressed_total_over_the_cap(self, api_factory: ApiFactory) -> None:
        async with api_factory(max_upload_uncompressed_bytes=64 * 1024) as api:
            data = npz_bytes(X=np.zeros((4000, 4), dtype=np.float32) + 1.5, y=np.zeros(4000, dtype=np.float32))
            response = await api.client.post("/v1/datasets", files={"file": ("big.npz", data)},
                                             headers=api.new_user())
            assert response.status_code == 422
            assert response.json()["error"]["fields"][0] == {
                "field": "file", "reason": f"uncompressed {4000 * 4 * 4 + 4000 * 4 + 2 * 128} bytes exceeds the "
                                            f"limit of {64 * 1024}"}

    def test_mutated_files_are_a_data_error_or_valid_never_a_crash(self, tmp_path: Path) -> None:
        """Flip, cut and splice bytes of a valid .npz (seeded): inspect_npz answers or raises DataError."""
        rng = random.Random(5)
        original = npz_bytes(**good_arrays(), X_test=np.ones((2, 4), dtype=np.float32),
                             y_test=np.zeros(2, dtype=np.int64))
        outcomes = {"valid": 0, "refused": 0}
        for i in range(400):
            data = bytearray(original)
            for _ in range(rng.randint(1, 8)):
                at = rng.randrange(len(data))
                match rng.randrange(4):
                    case 0:
                        data[at] ^= 1 << rng.randrange(8)
                    case 1:
                        data[at:at + 4] = rng.randbytes(4)
                    case 2:
                        del data[at:at + rng.randint(1, 64)]
                    case _:
                        data[at:at] = rng.randbytes(rng.randint(1, 64))
            path = tmp_path / f"m{i}.npz"
            path.write_bytes(bytes(data))
            try:
                inspect_npz(path, max_bytes=MiB, max_uncompressed_bytes=MiB)
                outcomes["valid"] += 1
            except DataError:
                outcomes["refused"] += 1
        assert outcomes["refused"] > 300, outcomes


# ------------------------------------------------------------------------------------------ safetensors
def safetensors_bytes(header: dict[str, Any] | bytes, data: bytes = b"", declared_length: int | None = None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if declared_length is None else declared_length) + raw + data


HOSTILE_SAFETENSORS = {
    "header length huge": safetensors_bytes(b"{}", declared_length=2**63),
    "header length past the end": safetensors_bytes({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}},
                                                    b"\0" * 8, declared_length=10_000),
    "header not JSON": safetensors_bytes(b"{not json at all" + b" " * 16),
    "header not an object": safetensors_bytes(b"[1, 2, 3]"),
    "offsets out of range": safetensors_bytes({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 1 << 40]}},
                                              b"\0" * 8),
    "offsets disagree with the shape": safetensors_bytes(
        {"w": {"dtype": "F32", "shape": [1000, 1000], "data_offsets": [0, 8]}}, b"\0" * 8),
    "unknown dtype": safetensors_bytes({"w": {"dtype": "Q7", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8),
    "shape overflows": safetensors_bytes({"w": {"dtype": "F32", "shape": [2**62, 2**62], "data_offsets": [0, 8]}},
                                         b"\0" * 8),
    "too short for a header": b"\x01\x02\x03",
    "empty": b"",
}


def run_dir_with(tmp_path: Path, weights: bytes, meta: dict[str, Any] | bytes | None = None) -> Path:
    """A run directory holding ckpt-000000005 with these weights; the metadata records their true sha256 (so
    that the safetensors parser itself is what gets tested) unless `meta` says otherwise."""
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    path = run / "ckpt-000000005.safetensors"
    path.write_bytes(weights)
    if meta is None:
        meta = {"format": "narrownet.checkpoint.v1", "step": 5, "sha256": hashlib.sha256(weights).hexdigest()}
    path.with_suffix(".json").write_bytes(meta if isinstance(meta, bytes) else json.dumps(meta).encode())
    return path


class TestHostileCheckpointsOnResume:
    @pytest.mark.parametrize("kind", sorted(HOSTILE_SAFETENSORS))
    def test_load_raises_checkpoint_error(self, tmp_path: Path, kind: str) -> None:
        from trainer.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint

        path = run_dir_with(tmp_path, HOSTILE_SAFETENSORS[kind])
        with pytest.raises(CheckpointError, match="unreadable safetensors"):
            load_checkpoint(path)
        with pytest.raises(CheckpointError):  # nothing valid to resume from: say so, do not start over silently
            latest_checkpoint(path.parent)

    @pytest.mark.parametrize("meta", [b"{broken", b"[]", b'{"format": "something else"}', b"\xff\xfe",
                                      json.dumps({"format": "narrownet.checkpoint.v1", "sha256": "0" * 64}).encode(),
                                      b"no step"])
    def test_bad_metadata_raises_checkpoint_error(self, tmp_path: Path, meta: bytes) -> None:
        from trainer.checkpoint import CheckpointError, load_checkpoint

        weights = safetensors_bytes({})
        if meta == b"no step":  # right sha256, but nothing to resume at
            meta = json.dumps({"format": "narrownet.checkpoint.v1", "sha256": hashlib.sha256(weights).hexdigest()}
                              ).encode()
        with pytest.raises(CheckpointError):
            load_checkpoint(run_dir_with(tmp_path, weights, meta))

    def test_truncated_real_checkpoint_fails_its_sha256(self, tmp_path: Path) -> None:
        import torch

        from trainer.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

        weights, _ = save_checkpoint(tmp_path / "run", 5, {"w": torch.arange(64.0)}, {"spec": {}})
        weights.write_bytes(weights.read_bytes()[:-16])
        with pytest.raises(CheckpointError, match="sha256"):
            load_checkpoint(weights)

    def test_mutated_headers_raise_checkpoint_error_or_load(self, tmp_path: Path) -> None:
        """Seeded byte flips in a real checkpoint's header (sha256 re-recorded): load or CheckpointError only."""
        import torch

        from trainer.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

        weights, _ = save_checkpoint(tmp_path / "real", 5, {"w": torch.arange(8.0), "v": torch.ones(2, 3)},
                                     {"spec": {}})
        original = weights.read_bytes()
        header_end = 8 + struct.unpack("<Q", original[:8])[0]
        rng = random.Random(7)
        refused = 0
        for _ in range(200):
            data = bytearray(original)
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(header_end)] = rng.randrange(256)
            try:
                load_checkpoint(run_dir_with(tmp_path, bytes(data)))
            except CheckpointError:
                refused += 1
        assert refused > 100


class TestHostileCheckpointsOnDownload:
    def _record(self, api: Api, user: User, weights: bytes, relpath: str | None = None,
                sha256: str | None = None) -> None:
        path, digest = write_checkpoint(api.settings.resolved_artifact_dir, user.job_id, 9, weights)
        with api.session() as s:
            s.add(Checkpoint(job_id=user.job_id, step=9, attempt=1, sha256=sha256 or digest,
                             size_bytes=len(weights), relpath=relpath or path))

    async def test_hostile_bytes_matching_their_record_are_served_verbatim(self, api: Api, alice: User) -> None:
        weights = HOSTILE_SAFETENSORS["header length huge"]
        self._record(api, alice, weights)
        response = await api.client.get(f"/v1/jobs/{alice.job_id}/checkpoint", headers=alice.headers)
        assert response.status_code == 200  # the API never parses checkpoints; it checks and streams bytes
        assert response.content == weights
        assert response.headers["x-checkpoint-sha256"] == hashlib.sha256(weights).hexdigest()

    async def test_bytes_not_matching_their_record_are_refused(self, api: Api, alice: User) -> None:
        self._record(api, alice, b"torn", sha256=hashlib.sha256(b"the whole file").hexdigest())
        response = await api.client.get(f"/v1/jobs/{alice.job_id}/checkpoint", headers=alice.headers)
        assert response.status_code == 409 and response.json()["error"]["code"] == "checkpoint_mismatch"
        assert "retry-after" in response.headers

    @pytest.mark.parametrize("what", ["directory", "fifo", "symlink out", "missing", "meta not json",
                                      "meta huge", "meta NaN"])
    async def test_odd_things_on_disk_are_4xx_never_5xx_or_a_hang(self, api: Api, alice: User, tmp_path: Path,
                                                                   what: str) -> None:
        artifacts = api.settings.resolved_artifact_dir
        relpath = f"jobs/{alice.job_id}/odd.safetensors"
        target = artifacts / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        if what == "directory":
            target.mkdir()
        elif what == "fifo":
            os.mkfifo(target)
        elif what == "symlink out":
            outside = tmp_path / "outside.safetensors"
            outside.write_bytes(b"secret")
            target.symlink_to(outside)
        elif what.startswith("meta"):
            target.write_bytes(b"weights")
            meta = {"meta not json": b"{", "meta huge": b" " * (17 * MiB),
                    "meta NaN": b'{"sha256": "%s", "loss": NaN}' % hashlib.sha256(b"weights").hexdigest().encode()}
            target.with_suffix(".json").write_bytes(meta[what])
        digest = hashlib.sha256(b"weights" if what.startswith("meta") or what == "symlink out" else b"").hexdigest()
        with api.session() as s:
            s.add(Checkpoint(job_id=alice.job_id, step=9, attempt=1, sha256=digest, size_bytes=1, relpath=relpath))

        for suffix in ("/checkpoint", "/checkpoint/meta"):
            response = await api.client.get(f"/v1/jobs/{alice.job_id}{suffix}", headers=alice.headers)
            if what == "meta NaN" and suffix == "/checkpoint/meta":
                assert response.status_code == 200 and response.json()["loss"] is None
            elif what.startswith("meta") and suffix == "/checkpoint":
                assert response.status_code == 200
            else:
                assert response.status_code == 410, (what, suffix, response.status_code)
                assert b"secret" not in response.content
