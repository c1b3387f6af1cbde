"""`narrownet serve`: the embedded default, an API server, one Celery worker and the reconciler as children.

With no NARROWNET_DATABASE_URL / NARROWNET_BROKER_URL set, all state (SQLite database, SQLite-backed broker,
artifacts) lives under NARROWNET_HOME. The children get the same settings through their environment.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from core.db.session import unit_of_work
from core.settings import Settings
from narrownet.processes import stop_all, wait_http

KEY_FILE = "api_key"
SHUTDOWN_GRACE_SECONDS = 20.0


def create_api_key(name: str) -> str:
    """Create a key in the configured database and return its plaintext (shown once)."""
    from api.services.keys import create_key

    with unit_of_work() as session:
        _, plaintext = create_key(session, name)
    return plaintext


def embedded_key(settings: Settings) -> str:
    """The key stored under home by an earlier `serve --print-key` if still valid, else a new one."""
    path = settings.home / KEY_FILE
    if path.exists():
        from api.services.keys import authenticate

        plaintext = path.read_text().strip()
        with unit_of_work() as session:
            if authenticate(session, plaintext) is not None:
                return plaintext
    plaintext = create_api_key("embedded")
    # The file holds a secret: readable by its owner only.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(plaintext + "\n")
    return plaintext


def child_env(settings: Settings) -> dict[str, str]:
    # Children resolve the same settings; home is made absolute so they agree whatever their cwd.
    return {**os.environ, "NARROWNET_HOME": str(settings.home.resolve())}


def api_command(host: str, port: int, log_level: str) -> list[str]:
    return [sys.executable, "-m", "uvicorn", "api.app:create_app", "--factory", "--host", host,
            "--port", str(port), "--log-level", log_level.lower()]


def worker_command(queues: str, concurrency: int) -> list[str]:
    return [sys.executable, "-m", "narrownet", "worker", "--queues", queues,
            "--concurrency", str(concurrency)]


def reconciler_command() -> list[str]:
    return [sys.executable, "-m", "narrownet", "reconcile"]


def run_embedded(settings: Settings, *, host: str, port: int, key: str | None) -> int:
    """Start the API and a worker (both queues); print the banner once the API answers."""
    env = child_env(settings)
    stopping = False

    def _on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    api = subprocess.Popen(api_command(host, port, settings.log_level), env=env)
    worker = subprocess.Popen(worker_command("cpu,gpu", 1), env=env)
    # The SQLite broker forgets a message once a worker takes it: only the reconciler brings back a job
    # whose worker died.
    reconciler = subprocess.Popen(reconciler_command(), env=env)
    children = [api, worker, reconciler]
    try:
        url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
        if wait_http(f"{url}/healthz", api):
            print(banner(url, key), flush=True)
        while not stopping and all(p.poll() is None for p in children):
            time.sleep(0.2)
    finally:
        stop_all(children, SHUTDOWN_GRACE_SECONDS)
        for s, handler in previous.items():
            signal.signal(s, handler)
    if stopping:
        return 0
    died = next(p for p in children if p.returncode is not None)
    name = "API server" if died is api else "worker" if died is worker else "reconciler"
    print(f"narrownet serve: the {name} exited with code {died.returncode}; stopped the rest",
          file=sys.stderr)
    return 1


EXAMPLE_SPEC = {
    "name": "hello", "regime": "constrained", "model": {"arch": "shallow", "width": 16},
    "data": {"source": "synthetic", "n": 64, "d": 4},
    "optim": {"name": "gd", "lr": 0.1, "momentum": 0.9, "iterations": 500},
}


def banner(url: str, key: str | None) -> str:
    lines = [f"narrownet is up at {url}  (OpenAPI, with the key: {url}/openapi.json; Ctrl-C stops it)"]
    if key is not None:
        auth = f'-H "Authorization: Bearer {key}"'
        lines += [
            "Try:",
            f"  curl -s {auth} -H 'Content-Type: application/json' \\\n"
            f"       -d '{json.dumps(EXAMPLE_SPEC)}' {url}/v1/jobs",
            f"  curl -s {auth} {url}/v1/jobs",
            "API key (stored in NARROWNET_HOME/api_key):",
            key,
        ]
    return "\n".join(lines)
