"""A narrownet deployment on loopback made of real processes that a test or a benchmark can kill by pid.

Used by the tests (tests/reliability) and the benchmarks (bench/chaos.py, bench/bench_embedded_load.py,
bench/bench_artifacts.py):
  RedisServer       a redis-server of our own on a free port, no persistence (killing it loses its messages)
  PostgresCluster   a throwaway PostgreSQL cluster (initdb, pg_ctl) on a free port, to stop and start
  S3Server          (s3server.py) moto's S3 server on a free port, behind a relay that can be cut and restored
  Cluster           uvicorn (the API), Celery workers and the reconciler, sharing one environment (each process
                    may add its own settings: a worker on "another host" gets a home of its own)
  Serve             `narrownet serve --print-key`, the embedded default, started as a user starts it

Every process runs in its own session (process group) and is stopped by pid; nothing here touches a server it
did not start.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from narrownet.processes import free_port, http_ok, kill_group, start_process, stop_all, wait_until

STARTUP_SECONDS = 90.0


class RedisServer:
    """redis-server on a free loopback port with persistence off: a kill loses every message it held."""

    def __init__(self, log_dir: Path, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port or free_port()
        self.log = log_dir / f"redis-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://{self.host}:{self.port}/{db}"

    @staticmethod
    def binary() -> str:
        found = shutil.which("redis-server")
        if found is None:
            raise RuntimeError("redis-server is not installed")
        return found

    def start(self) -> None:
        binary = self.binary()
        self.process = start_process(
            [binary, "--port", str(self.port), "--bind", self.host, "--save", "", "--appendonly", "no",
             "--daemonize", "no", "--protected-mode", "no"], dict(os.environ), self.log)
        wait_until(self.answers, 30, f"redis-server on port {self.port}")

    def answers(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        if self.process is not None:
            kill_group(self.process)
            self.process = None

    def flush(self) -> None:
        with socket.create_connection((self.host, self.port), timeout=5) as s:
            s.sendall(b"FLUSHALL\r\n")
            s.recv(16)


def postgres_binary(name: str) -> str:
    """Where PostgreSQL's server program `name` (initdb, pg_ctl) is; RuntimeError if it is not installed."""
    installed = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))  # Debian keeps them off PATH
    found = shutil.which(name) or (installed[-1] if installed else None)
    if found is None:
        raise RuntimeError(f"PostgreSQL's {name} is not installed")
    return found


class PostgresCluster:
    """A PostgreSQL cluster of our own (trust auth, loopback, free port) in a temporary data directory.

    PostgreSQL refuses to run as root, so under root its commands run as the `postgres` user. `host` is the
    address it listens on, and `allow` a network (CIDR) whose clients it trusts besides loopback.
    """

    def __init__(self, host: str = "127.0.0.1", allow: str | None = None) -> None:
        self.host, self.allow = host, allow
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="narrownet-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@{self.host}:{self.port}/{database}"

    def _run(self, *argv: str) -> None:
        subprocess.run([*self._as, *argv], check=True, capture_output=True, timeout=120)

    def init(self) -> None:
        if self._as:
            shutil.chown(self.dir, "postgres")
        self._run(postgres_binary("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "--no-sync", "-E", "UTF8")
        if self.allow:
            with (self.data / "pg_hba.conf").open("a") as hba:
                hba.write(f"host all all {self.allow} trust\n")

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.dir} -c listen_addresses={self.host} -c fsync=off "
                   "-c full_page_writes=off")
        self._run(postgres_binary("pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.log), "-w",
                  "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(postgres_binary("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(f"host={self.host} port={self.port} user=postgres dbname=postgres",
                             autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass  # already stopped
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class Cluster:
    """The API, workers and the reconciler over one database and one broker; each process killable by pid."""

    home: Path
    database_url: str
    broker_url: str
    settings: dict[str, str] = field(default_factory=dict)  # more environment (NARROWNET_*, AWS_*) for every process
    api_port: int = field(default_factory=free_port)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _log_starts: dict[str, int] = field(default_factory=dict)  # a restarted process appends to its log

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("NARROWNET_")}
        env.update({"NARROWNET_HOME": str(self.home), "NARROWNET_DATABASE_URL": self.database_url,
                    "NARROWNET_BROKER_URL": self.broker_url, "NARROWNET_LOG_LEVEL": "INFO",
                    "NARROWNET_RATE_LIMIT_PER_MINUTE": "100000", "PYTHONUNBUFFERED": "1", **self.settings})
        return env

    def log(self, name: str) -> Path:
        return self.home / f"{name}.log"

    def log_text(self, name: str, *, since_start: bool = False) -> str:
        path = self.log(name)
        if not path.exists():
            return ""
        with path.open("rb") as f:
            f.seek(self._log_starts.get(name, 0) if since_start else 0)
            return f.read().decode(errors="replace")

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start `argv` with the cluster's environment plus `env` (this process's own settings)."""
        log = self.log(name)
        self._log_starts[name] = log.stat().st_size if log.exists() else 0
        process = start_process(argv, {**self.env, **(env or {})}, log)
        self.processes[name] = process
        return process

    def start_api(self, name: str = "api") -> subprocess.Popen[bytes]:
        return self.start(name, [sys.executable, "-m", "uvicorn", "api.app:create_server_app", "--factory",
                                 "--host", "127.0.0.1", "--port", str(self.api_port)])

    def start_worker(self, name: str = "worker", concurrency: int = 1, env: dict[str, str] | None = None,
                     wrap: list[str] | None = None) -> subprocess.Popen[bytes]:
        """A Celery worker; `env` adds its own settings (a home of its own: another host's disk), and `wrap`
        runs it inside another command (`ip netns exec NS`: another host's network)."""
        return self.start(name, [*(wrap or []), sys.executable, "-m", "celery", "-A", "worker.celery_app:celery_app",
                                 "worker", "--queues", "cpu,gpu", "--concurrency", str(concurrency), "--loglevel",
                                 "INFO", "--hostname", f"{name}-{self.api_port}@%h", "--without-heartbeat",
                                 "--without-gossip", "--without-mingle"], env)

    def start_reconciler(self, name: str = "reconciler") -> subprocess.Popen[bytes]:
        return self.start(name, [sys.executable, "-m", "narrownet", "reconcile"])

    def api_up(self) -> bool:
        return http_ok(f"{self.url}/healthz")

    def wait_api(self, timeout: float = STARTUP_SECONDS) -> None:
        wait_until(lambda: self._check_alive() or self.api_up(), timeout, "the API to answer /healthz", 0.1)

    def worker_ready(self, name: str = "worker") -> bool:
        return "ready." in self.log_text(name, since_start=True)

    def wait_worker(self, name: str = "worker", timeout: float = STARTUP_SECONDS) -> None:
        wait_until(lambda: self._check_alive() or self.worker_ready(name), timeout, f"{name} to be ready", 0.1)

    def _check_alive(self) -> bool:
        dead = {n: p.returncode for n, p in self.processes.items() if p.poll() is not None}
        if dead:
            raise RuntimeError(f"exited: {dead}\n{self.log_tail()}")
        return False

    def kill(self, name: str) -> None:
        """SIGKILL a process and its group (a worker's pool children die with it)."""
        kill_group(self.processes.pop(name))

    def log_tail(self, chars: int = 3000) -> str:
        parts = []
        for path in sorted(self.home.glob("*.log")):
            parts.append(f"--- {path.name} ---\n{path.read_text(errors='replace')[-chars:]}")
        return "\n".join(parts)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM every process at once (warm shutdown), then SIGKILL the groups of any that outlive the grace."""
        processes = [self.processes.pop(name) for name in list(self.processes)]
        stop_all(processes, grace)


def pid_of_lease(lease_owner: str | None) -> int | None:
    """The pool process holding a job: worker ids are host:pid:task-id (worker/tasks.py)."""
    if not lease_owner:
        return None
    parts = lease_owner.split(":")
    return int(parts[1]) if len(parts) >= 3 and parts[1].isdigit() else None


SERVE_KEY_LINE = "API key (stored in NARROWNET_HOME/api_key):"


class Serve:
    """`narrownet serve --print-key` under `home` (SQLite database and broker), its output appended to a log."""

    def __init__(self, home: Path, settings: dict[str, str] | None = None) -> None:
        self.home, self.port = home, free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("NARROWNET_")}
        self.env.update({**(settings or {}), "NARROWNET_HOME": str(home), "PYTHONUNBUFFERED": "1"})
        self.process: subprocess.Popen[bytes] | None = None
        self.log = home.parent / "serve.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.home / 'narrownet.db'}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def start(self) -> str:
        """Start serve; return the key it prints once the API answers."""
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "narrownet", "serve", "--port", str(self.port), "--print-key"],
                env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

        def printed_key() -> str | None:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"narrownet serve exited:\n{self.log_text()[-3000:]}")
            text = self.log.read_bytes()[offset:].decode(errors="replace")
            return text.split(SERVE_KEY_LINE)[1].split()[0] if SERVE_KEY_LINE in text else None

        return str(wait_until(printed_key, STARTUP_SECONDS, "narrownet serve to print its key", 0.1))

    def stop(self, grace: float = 30.0) -> None:
        if self.process is not None:
            stop_all([self.process], grace)
            self.process = None
