"""Process helpers shared by `narrownet serve`, the benchmarks and the tests: ports, readiness, stopping.

Every process we start runs in its own session (process group), so stopping it also stops what it forked
(a Celery worker's pool children).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvicorn

T = TypeVar("T")
Process = subprocess.Popen[bytes]


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(predicate: Callable[[], T], timeout: float, what: str, poll: float = 0.05) -> T:
    """Poll `predicate` until it returns something truthy; raise TimeoutError naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(poll)


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """GET `url` answers 200 (False while nothing listens or it answers otherwise)."""
    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.TransportError:
        return False


def wait_http(url: str, process: Process | None = None, timeout: float = 90.0) -> bool:
    """Wait until GET `url` answers 200; False at the deadline or as soon as `process` has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (process is None or process.poll() is None):
        if http_ok(url):
            return True
        time.sleep(0.1)
    return False


def start_process(argv: list[str], env: dict[str, str], log: Path | None = None) -> Process:
    """Start `argv` in a session of its own, its output appended to `log` (or inherited when None)."""
    if log is None:
        return subprocess.Popen(argv, env=env, start_new_session=True)
    with log.open("ab") as out:
        return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def kill_group(process: Process, sig: int = signal.SIGKILL) -> None:
    """Signal the process and everything in its group, then reap it (a process that leads no group of its own,
    like serve's children, which share serve's group so that Ctrl-C reaches them, is signalled alone)."""
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        if process.poll() is None:
            process.send_signal(sig)
    process.wait()


def stop_all(processes: Iterable[Process], grace: float = 15.0) -> None:
    """SIGTERM every process at once (warm shutdown for celery, graceful for uvicorn), then SIGKILL the
    groups of any that outlive the grace, and whatever they left behind in their groups."""
    processes = list(processes)
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        kill_group(process)


def stop_gracefully(process: Process, grace: float = 15.0) -> None:
    stop_all([process], grace)


@contextmanager
def serving_in_thread(app: Any, timeout: float = 30.0) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on a free loopback port in a thread of this process; yield its base URL.

    For tests and benchmarks that need real HTTP (streaming responses) and also the app's own objects (its
    connection pool, its event hub) in hand."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True, name=f"uvicorn-{port}")
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), timeout, "uvicorn to start")
        if not server.started:
            raise RuntimeError(f"uvicorn on port {port} did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
