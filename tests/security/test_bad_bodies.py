"""Promise 8, request bodies: oversized (413, reading stops at the cap, memory stays flat), malformed JSON,
NaN/Infinity/negative hyperparameters, absurd sizes and unknown fields (422 naming the field).
"""

from __future__ import annotations

import copy
import json
import select
import socket
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from narrownet.processes import free_port
from tests.e2e.conftest import Stack, clean_env
from tests.security.conftest import SPEC, Api, ApiFactory

pytestmark = pytest.mark.anyio

CHUNK = 64 * 1024


def fields(response: Any) -> dict[str, str]:
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == "validation_error", body
    return {f["field"]: f["reason"] for f in body["error"]["fields"]}


async def post_raw(api: Api, raw: bytes | str, headers: dict[str, str]) -> Any:
    return await api.client.post("/v1/jobs", content=raw, headers={**headers, "Content-Type": "application/json"})


class TestOversizedBodies:
    @pytest.mark.parametrize("route", ["/v1/jobs", "/v1/datasets"])
    async def test_streamed_body_is_cut_at_the_cap(self, api_factory: ApiFactory, route: str) -> None:
        """No Content-Length: the server must stop pulling the body at cap + one chunk and answer 413."""
        pulled = 0

        async def endless() -> AsyncIterator[bytes]:
            nonlocal pulled
            if route == "/v1/datasets":
                head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.npz"\r\n\r\n'
                pulled += len(head)
                yield head
            for _ in range(1024):  # 64 MiB: far past any cap, bounded so a regression fails instead of hanging
                pulled += CHUNK
                yield b"x" * CHUNK

        cap = 256 * 1024
        async with api_factory(max_request_bytes=cap, max_upload_bytes=cap) as api:
            ctype = "multipart/form-data; boundary=b" if route == "/v1/datasets" else "application/json"
            response = await api.client.post(route, content=endless(), headers={
                **api.new_user(), "Content-Type": ctype})
            assert "content-length" not in response.request.headers
            assert response.status_code == 413, response.text
            assert response.json()["error"]["code"] == "payload_too_large"
            upload_slack = 64 * 1024 if route == "/v1/datasets" else 0  # room for multipart framing
            assert pulled <= cap + upload_slack + 2 * CHUNK, f"the server read {pulled} bytes"

    @pytest.mark.slow
    def test_uvicorn_memory_stays_flat_under_huge_streamed_bodies(self, tmp_path: Path) -> None:
        """A real uvicorn process offered 256 MiB bodies without a length: 413, and its peak RSS barely moves."""
        with _api_server(tmp_path) as (stack, key, pid):
            peak_before = _peak_rss(pid)
            offered = 256 << 20
            framing = b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.npz"\r\n\r\n'
            for path, ctype, head in (("/v1/jobs", "application/json", b""),
                                      ("/v1/datasets", "multipart/form-data; boundary=b", framing)):
                status, sent = _stream_chunked(stack.url, path, key, ctype, head, offered)
                assert status == 413, (path, status)
                assert sent < offered // 8, f"{path}: the server kept reading ({sent} bytes accepted)"
            growth = _peak_rss(pid) - peak_before
            assert growth < 32 << 20, f"peak RSS grew by {growth >> 20} MiB"
            assert httpx_get(stack.url + "/healthz") == 200


class TestMalformedJson:
    @pytest.mark.parametrize("raw, reason", [
        (b'{"name": "x",', "malformed JSON"),
        (b'{"name": "x"} trailing', "malformed JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "nested too deeply"),
        (b'{"name": "\xff\xfe"}', "not valid UTF-8"),
        (json.dumps(SPEC).replace('"width": 4', '"width": ' + "9" * 5000).encode(), "too many digits"),
        (b"\x00\x01\x02", "malformed JSON"),
    ])
    async def test_422_naming_the_body(self, api: Api, raw: bytes, reason: str) -> None:
        response = await post_raw(api, raw, api.new_user())
        assert response.status_code == 422, response.text
        assert reason in fields(response)["body"]

    @pytest.mark.parametrize("raw", [b"", b"[]", b'"spec"', b"null", b"12"])
    async def test_not_an_object(self, api: Api, raw: bytes) -> None:
        response = await post_raw(api, raw, api.new_user())
        assert response.status_code == 422
        assert list(fields(response)) == ["body"]


def _with(path: str, token: str) -> str:
    """SPEC as raw JSON with the value at dotted `path` replaced by a raw token (NaN is not valid JSON)."""
    spec: dict[str, Any] = copy.deepcopy(SPEC) | {"constraint": {}}
    *parents, last = path.split(".")
    node = spec
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = "__TOKEN__"
    return json.dumps(spec).replace('"__TOKEN__"', token)


class TestHyperparameters:
    @pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e999"])
    @pytest.mark.parametrize("path", ["optim.lr", "optim.momentum", "optim.weight_decay", "optim.eps",
                                      "optim.step_gamma", "constraint.radius", "constraint.zeta",
                                      "constraint.gamma"])
    async def test_non_finite_is_refused_naming_the_field(self, api: Api, path: str, token: str) -> None:
        raw = _with(path, token)
        assert token in raw
        response = await post_raw(api, raw, api.new_user())
        assert response.status_code == 422, response.text
        assert path in fields(response), fields(response)

    @pytest.mark.parametrize("path, value", [
        ("optim.lr", "-0.1"), ("optim.lr", "0"), ("optim.iterations", "-5"), ("optim.momentum", "-0.5"),
        ("optim.weight_decay", "-1"), ("constraint.radius", "-1"), ("constraint.zeta", "-0.1"),
        ("constraint.gamma", "0.5"), ("model.width", "-4"), ("data.n", "-8"), ("data.d", "0"),
        ("seed", "-1"), ("metrics_every", "0"), ("optim.batch_size", "0"),
    ])
    async def test_negative_or_zero_is_refused_naming_the_field(self, api: Api, path: str, value: str) -> None:
        response = await post_raw(api, _with(path, value), api.new_user())
        assert response.status_code == 422, response.text
        assert path in fields(response), fields(response)


class TestAbsurdSizes:
    @pytest.mark.parametrize("path, value", [
        ("model.width", "1000000000"), ("data.n", "1000000000000"), ("data.d", "100000000"),
        ("optim.iterations", "10000000000000"), ("optim.lr", "1e300"), ("seed", "99999999999999999999"),
        ("metrics_every", "1" + "0" * 400), ("name", json.dumps("n" * 10_000)),
        ("optim.milestones", json.dumps([0.5] * 1000)),
    ])
    async def test_422_naming_the_field(self, api: Api, path: str, value: str) -> None:
        response = await post_raw(api, _with(path, value), api.new_user())
        assert response.status_code == 422, response.text
        assert path in fields(response), fields(response)

    async def test_width_times_dimension_over_the_parameter_cap(self, api: Api) -> None:
        body = {**SPEC, "model": {"arch": "shallow", "width": 65_536}, "data": {"source": "synthetic", "n": 8,
                                                                              "d": 10_000}}
        response = await api.client.post("/v1/jobs", json=body, headers=api.new_user())
        assert response.status_code == 422 and "exceeds" in fields(response)["model.width"]

    async def test_too_many_and_too_wide_mlp_layers(self, api: Api) -> None:
        user = api.new_user()
        for hidden in ([8] * 7, [10**6]):
            body = {**SPEC, "regime": "regular", "model": {"arch": "mlp", "hidden": hidden}}
            response = await api.client.post("/v1/jobs", json=body, headers=user)
            assert response.status_code == 422
            assert any(f.startswith("model.hidden") for f in fields(response)), fields(response)


class TestUnknownFields:
    @pytest.mark.parametrize("path", ["extra", "model.depth", "data.url", "optim.clip", "constraint.norm",
                                      "data.__class__"])
    async def test_422_naming_the_unknown_field(self, api: Api, path: str) -> None:
        response = await post_raw(api, _with(path, "1"), api.new_user())
        assert response.status_code == 422, response.text
        assert list(fields(response)) == [path]


    async def test_a_flood_of_unknown_fields_gets_a_short_answer(self, api: Api) -> None:
        body = json.dumps({**SPEC, **{f"k{i}": 1 for i in range(60_000)}})
        assert len(body) < api.settings.max_request_bytes
        response = await post_raw(api, body, api.new_user())
        assert response.status_code == 422
        assert len(response.content) < 16 * 1024, len(response.content)  # no megabytes of errors back
        assert list(fields(response))[:2] == ["k0", "k1"] and "more errors" in response.json()["error"]["message"]


# ------------------------------------------------------------------------------------------- helpers
def httpx_get(url: str) -> int:
    import httpx

    return httpx.get(url, timeout=10).status_code


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


def _api_server(tmp_path: Path) -> Any:
    from contextlib import contextmanager

    @contextmanager
    def running() -> Iterator[tuple[Stack, str, int]]:
        port = free_port()
        env = clean_env(NARROWNET_HOME=str(tmp_path), NARROWNET_MAX_REQUEST_BYTES=str(1 << 20),
                        NARROWNET_MAX_UPLOAD_BYTES=str(1 << 20), NARROWNET_URL=f"http://127.0.0.1:{port}")
        stack = Stack("bodies", f"http://127.0.0.1:{port}", env, tmp_path)
        stack.cli("db", "upgrade")
        key = stack.create_key("bodies")
        try:
            process = stack.start("api", [sys.executable, "-m", "uvicorn", "api.app:create_server_app", "--factory",
                                          "--host", "127.0.0.1", "--port", str(port)])
            stack.wait_until_up()
            # Warm up the paths under test, so that what they import is not counted as growth.
            for path, ctype, head in (("/v1/jobs", "application/json", b""),
                                      ("/v1/datasets", "multipart/form-data; boundary=b", b"")):
                _stream_chunked(stack.url, path, key, ctype, head, 2 << 20)
            yield stack, key, process.pid
        finally:
            stack.stop()

    return running()


def _stream_chunked(url: str, path: str, key: str, ctype: str, head: bytes, total: int) -> tuple[int, int]:
    """Send up to `total` bytes as a chunked body while watching for the answer; (status, bytes accepted).

    Writing and reading are interleaved so that a server that answers early (and stops reading) is seen at
    once rather than after a blocked write; the deadline turns a hung server into a failure.
    """
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
                     f"Content-Type: {ctype}\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        conn.setblocking(False)
        frame = b"%x\r\n" % CHUNK + b"x" * CHUNK + b"\r\n"
        pending = (b"%x\r\n" % len(head) + head + b"\r\n") if head else b""
        sent, answer = 0, b""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            readable, writable, _ = select.select([conn], [conn] if sent < total else [], [], 1.0)
            if readable:
                try:
                    data = conn.recv(65536)
                except ConnectionResetError:
                    break
                if not data:
                    break
                answer += data
                if b"\r\n\r\n" in answer:
                    break
            elif writable:
                pending = pending or frame
                try:
                    n = conn.send(pending)
                except (BrokenPipeError, ConnectionResetError):
                    break
                pending, sent = pending[n:], sent + n
        else:
            raise AssertionError(f"{path}: no answer within the deadline after {sent} bytes")
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer.split()[1]), sent
