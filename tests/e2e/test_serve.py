"""`narrownet serve --print-key`: the one-command embedded service, started and stopped like a user would."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from narrownet.client import NarrownetClient
from narrownet.processes import free_port, stop_gracefully
from tests.e2e.conftest import STARTUP_SECONDS, VENV_BIN, clean_env

pytestmark = [pytest.mark.service, pytest.mark.slow]


def children_of(pid: int) -> set[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def start_serve(home: Path, port: int) -> tuple[subprocess.Popen[bytes], str]:
    """Start serve; return it and the key it printed (alone on the last line of its banner)."""
    out = home.parent / f"serve-{time.monotonic_ns()}.out"
    with out.open("wb") as f:
        process = subprocess.Popen([str(VENV_BIN / "narrownet"), "serve", "--port", str(port), "--print-key"],
                                   env=clean_env(NARROWNET_HOME=str(home)), stdout=f, stderr=subprocess.DEVNULL,
                                   start_new_session=True)
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline and process.poll() is None:
        lines = out.read_text().splitlines()
        if "API key (stored in NARROWNET_HOME/api_key):" in lines:
            after = lines[lines.index("API key (stored in NARROWNET_HOME/api_key):") + 1:]
            if after:
                return process, after[0]
        time.sleep(0.2)
    stop_gracefully(process)
    raise AssertionError(f"serve printed no key within {STARTUP_SECONDS}s:\n{out.read_text()}")


def test_serve_runs_a_job_stops_cleanly_on_sigterm_and_reuses_its_key(tmp_path: Path):
    home, port = tmp_path / "home", free_port()
    process, key = start_serve(home, port)
    try:
        assert key.startswith("nn_") and (home / "api_key").read_text().strip() == key
        assert (home / "narrownet.db").is_file()
        with NarrownetClient(f"http://127.0.0.1:{port}", key) as client:
            job = client.submit({"name": "serve-smoke", "regime": "constrained",
                                 "model": {"arch": "shallow", "width": 8},
                                 "data": {"source": "synthetic", "n": 16, "d": 4},
                                 "optim": {"name": "gd", "lr": 0.1, "iterations": 100}})
            assert client.wait(job["id"], timeout=120, poll_interval=0.2)["status"] == "succeeded"
        assert (home / "artifacts" / "jobs" / job["id"]).is_dir()
        # The children's banners and logs went to serve.log; the console kept the banner, key last.
        console = sorted(tmp_path.glob("serve-*.out"))[0].read_text()
        assert "celery@" not in console and "Uvicorn running" not in console
        assert console.strip().splitlines()[-1] == key and str(home / "serve.log") in console
        assert "Uvicorn running" in (home / "serve.log").read_text()
        assert f"job {job['id']} attempt 1: succeeded" in (home / "serve.log").read_text()
        children = children_of(process.pid)
        assert len(children) == 3  # the API server, the worker and the reconciler

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        assert not any(alive(pid) for pid in children)
    finally:
        stop_gracefully(process)

    again, same_key = start_serve(home, port)
    stop_gracefully(again)
    assert same_key == key
