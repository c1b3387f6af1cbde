"""End-to-end stacks: a real uvicorn server and a real Celery worker process per backend.

embedded: SQLite database and SQLite-backed kombu broker under a temporary NARROWNET_HOME.
postgres: a fresh PostgreSQL database and an empty Redis database number for this session.
Every process is started in its own process group and killed by pid in teardown, also on failure.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from narrownet.client import NarrownetClient
from narrownet.processes import free_port, http_ok, stop_all, wait_until
from tests.service_guard import REDIS_HOST, REDIS_PORT, redis_database, temporary_postgres_database

VENV_BIN = Path(sys.executable).parent
STARTUP_SECONDS = 90.0


def clean_env(**narrownet: str) -> dict[str, str]:
    """The parent's environment without any NARROWNET_* setting, plus the given ones."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NARROWNET_")}
    env.update(narrownet)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Stack:
    name: str
    url: str
    env: dict[str, str]
    home: Path
    logs: dict[str, Path] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = self.home / f"{name}.log"
        self.logs[name] = log
        with log.open("wb") as out:
            process = subprocess.Popen(argv, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        self.processes[name] = process
        return process

    def cli(self, *args: str, timeout: float = 120.0, check: bool = True,
            env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run the `narrownet` command against this stack."""
        result = subprocess.run([str(VENV_BIN / "narrownet"), *args], env={**self.env, **(env_extra or {})},
                                capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"narrownet {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
        return result

    def create_key(self, name: str) -> str:
        return self.cli("keys", "create", name).stdout.strip().splitlines()[-1]

    def client(self, key: str | None) -> NarrownetClient:
        return NarrownetClient(self.url, key, timeout=30.0)

    def log_tail(self, chars: int = 4000) -> str:
        return "\n".join(f"--- {n} ---\n{p.read_text(errors='replace')[-chars:]}" for n, p in self.logs.items())

    def _ready(self) -> bool:
        dead = [n for n, p in self.processes.items() if p.poll() is not None]
        if dead:
            raise AssertionError(f"{dead} exited during startup\n{self.log_tail()}")
        return http_ok(f"{self.url}/readyz")

    def wait_until_up(self) -> None:
        try:
            wait_until(self._ready, STARTUP_SECONDS, f"{self.name}: the API to be ready", poll=0.2)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{self.log_tail()}") from None

    def stop(self) -> None:
        stop_all(self.processes.values())


def _backend_env(name: str, home: Path, resources: ExitStack) -> dict[str, str]:
    # One torch thread per worker process, as in tests/reliability: on a small shared machine, OpenMP threads
    # spinning against other processes make a run's time swing 10x, and the plan tests compare run times.
    settings = {"NARROWNET_HOME": str(home), "NARROWNET_LOG_LEVEL": "INFO", "NARROWNET_METRICS_FLUSH_EVERY": "5",
                "NARROWNET_WORKER_TORCH_THREADS": "1"}
    if name == "postgres":
        settings["NARROWNET_DATABASE_URL"] = resources.enter_context(temporary_postgres_database("narrownet_e2e"))
        db = resources.enter_context(redis_database())
        settings["NARROWNET_BROKER_URL"] = f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}"
    return clean_env(**settings)


@pytest.fixture(scope="session", params=["embedded", pytest.param("postgres", marks=pytest.mark.service)])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp(f"e2e-{request.param}")
    with ExitStack() as resources:
        port = free_port()
        env = _backend_env(request.param, home, resources)
        stack = Stack(request.param, f"http://127.0.0.1:{port}", {**env, "NARROWNET_URL": f"http://127.0.0.1:{port}"},
                      home)
        stack.cli("db", "upgrade")
        resources.callback(stack.stop)
        stack.start("api", [sys.executable, "-m", "uvicorn", "api.app:create_server_app", "--factory",
                            "--host", "127.0.0.1", "--port", str(port)])
        stack.start("worker", [sys.executable, "-m", "celery", "-A", "worker.celery_app:celery_app", "worker",
                               "--queues", "cpu,gpu", "--concurrency", "1", "--loglevel", "INFO",
                               "--hostname", f"e2e-{request.param}-{port}@%h"])
        stack.wait_until_up()
        yield stack


@pytest.fixture(scope="module")
def keys(stack: Stack) -> dict[str, str]:
    return {"alice": stack.create_key("alice"), "bob": stack.create_key("bob")}


@pytest.fixture
def alice(stack: Stack, keys: dict[str, str]):
    with stack.client(keys["alice"]) as client:
        yield client


@pytest.fixture
def bob(stack: Stack, keys: dict[str, str]):
    with stack.client(keys["bob"]) as client:
        yield client


def shallow_spec(name: str, regime: str, data: dict[str, Any], *, iterations: int = 300,
                 **extra: Any) -> dict[str, Any]:
    return {"name": name, "regime": regime, "model": {"arch": "shallow", "width": 12, "activation": "tanh"},
            "data": data, "optim": {"name": "gd", "lr": 0.05, "momentum": 0.9, "iterations": iterations},
            "metrics_every": 50, "checkpoint_every": 100, **extra}
