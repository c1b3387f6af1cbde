"""An S3 server for tests and benchmarks: moto's (`moto[server]`, a dev dependency) on a free port.

moto keeps its objects in memory, so "the store is down" cannot be a restart of moto itself. Clients reach it
through a TcpRelay instead, which `stop()` cuts (connections refused, open ones dropped, as while a MinIO
restarts) and `start()` restores, with every object still there, as MinIO's disk would keep them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

from narrownet.processes import free_port, kill_group, start_process, wait_until

REGION = "us-east-1"


class TcpRelay:
    """Forwards connections from (host, port) to `target` in threads of this process, until stopped."""

    def __init__(self, host: str, port: int, target: tuple[str, int]) -> None:
        self.host, self.port, self.target = host, port, target
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._listener is not None

    def start(self) -> None:
        listener = socket.create_server((self.host, self.port))  # SO_REUSEADDR: the same port again after stop
        listener.settimeout(0.2)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True, name="relay-accept").start()

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            for sock in self._open:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            client.settimeout(None)
            with self._lock:
                self._open |= {client, upstream}
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True, name="relay-pump").start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):  # one side ended: end both, as a dropped connection would
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        with self._lock:
            self._open -= {src, dst}
        for sock in (src, dst):
            sock.close()


class S3Server:
    """moto's S3 server, reached at `endpoint` (through a relay that stop()/start() cut and restore)."""

    def __init__(self, log_dir: Path, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = free_port()
        self.moto_port = free_port()
        self.log = log_dir / f"s3-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.relay = TcpRelay(host, self.port, (host, self.moto_port))

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        """What a process needs to reach this store: boto3's standard variables (moto accepts any key)."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "narrownet-test",
                "AWS_SECRET_ACCESS_KEY": "narrownet-test", "AWS_DEFAULT_REGION": REGION}

    def start(self) -> None:
        """Start moto (the first time) and open the endpoint."""
        if self.process is None:
            self.process = start_process(
                [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.moto_port)],
                dict(os.environ), self.log)
            wait_until(lambda: self._answers(self.moto_port), 60, f"moto's S3 server on port {self.moto_port}", 0.1)
        if not self.relay.running:
            self.relay.start()

    def stop(self) -> None:
        """The store goes down for its clients: connections refused, open ones dropped; objects kept."""
        self.relay.stop()

    def kill(self) -> None:
        self.relay.stop()
        if self.process is not None:
            kill_group(self.process)
            self.process = None

    def _answers(self, port: int) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"moto's S3 server exited: {self.log.read_text(errors='replace')[-2000:]}")
        try:
            with socket.create_connection((self.host, port), timeout=1):
                return True
        except OSError:
            return False

    def create_bucket(self, name: str) -> None:
        import boto3

        client = boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION,
                              aws_access_key_id="narrownet-test", aws_secret_access_key="narrownet-test")
        client.create_bucket(Bucket=name)
