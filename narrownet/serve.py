"""`narrownet serve`: the embedded default, an API server, one Celery worker and the reconciler as children.

With no NARROWNET_DATABASE_URL / NARROWNET_BROKER_URL set, all state (SQLite database, SQLite-backed broker,
artifacts) lives under NARROWNET_HOME. The children get the same settings through their environment.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from core.db.session import unit_of_work
from core.settings import Settings
from narrownet.processes import stop_all, wait_http

KEY_FILE = "api_key"
LOG_FILE = "serve.log"
LOG_TAIL_LINES = 20
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
    return [sys.executable, "-m", "uvicorn", "api.app:create_server_app", "--factory", "--host", host,
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
    # The children's own banners and logs go to a file: the console keeps the few lines a user needs.
    log_path = (settings.home / LOG_FILE).resolve()
    with log_path.open("ab") as log:
        def start(argv: list[str]) -> subprocess.Popen[bytes]:
            return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)

        api = start(api_command(host, port, settings.log_level))
        worker = start(worker_command("cpu,gpu", 1))
        # The SQLite broker forgets a message once a worker takes it: only the reconciler brings back a job
        # whose worker died.
        reconciler = start(reconciler_command())
    children = [api, worker, reconciler]
    try:
        url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
        if wait_http(f"{url}/healthz", api):
            print(banner(url, key, log_path), flush=True)
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
    tail = log_path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
    print("\n".join([f"narrownet serve: the {name} exited with code {died.returncode}; stopped the rest. "
                     f"The end of {log_path}:", *tail]), file=sys.stderr)
    return 1


def banner(url: str, key: str | None, log_path: Path) -> str:
    """What a user needs, printed last so nothing scrolls it away: where it runs, how to try it, the key."""
    lines = [f"narrownet is up at {url}  (logs: {log_path}; Ctrl-C stops it)",
             f"  dashboard: {url}/  (sign in with an API key)    API docs: {url}/docs"]
    if key is not None:
        lines += [
            "Try (from the repository root):",
            f"  export NARROWNET_API_KEY={key}",
            "  .venv/bin/narrownet submit examples/constrained.json --wait",
            f"  curl -s -H \"Authorization: Bearer $NARROWNET_API_KEY\" -H 'Content-Type: application/json' "
            f"-d @examples/regular.json {url}/v1/jobs",
            "API key (stored in NARROWNET_HOME/api_key):",
            key,
        ]
    return "\n".join(lines)
