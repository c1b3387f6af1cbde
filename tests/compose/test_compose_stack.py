"""docker-compose.yml, run: podman-compose brings this very file up on images built here, and a user works with it.

Only variables that .env.example documents change (the image names, the published port, the data folder, the
password); the file itself is never edited or copied. The steps follow README's compose section: `up -d` (the
gpu worker stays down), the first key with README's command, an MNIST job from the data folder through the
published port and its checkpoint's sha256, a worker container killed with SIGKILL mid-job and brought back by its
restart policy while the job finishes, then `down` and `up` again with everything still there.

Needs root, podman, runc, debootstrap and podman-compose (tests/compose/install.sh, which .ci/run calls): it skips
without them, and fails instead under CI=true. A first run on a machine took 5 minutes here, a rerun 2 to 2.5.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import secrets
import signal
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from narrownet.processes import free_port
from tests.compose.compose_file import (
    COMPOSE_FILE,
    env_example,
    load,
    readme_compose_commands,
)
from tests.compose.engine import VENV_BIN, Podman, missing_tools, tail
from tests.service_guard import in_ci

pytestmark = [pytest.mark.slow, pytest.mark.compose]

CPU_SERVICES = {"postgres", "redis", "migrate", "api", "worker-cpu", "reconciler"}
STARTUP_SECONDS = 240.0
JOB_SECONDS = 300.0

MNIST_SPEC = {
    "name": "compose-mnist", "regime": "constrained",
    "model": {"arch": "mlp", "hidden": [16, 8], "activation": "relu"},
    "data": {"source": "mnist"}, "loss": "cross_entropy",
    "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "batch_size": 16, "epochs": 3},
    "constraint": {"radius": 5.0}, "seed": 0, "device": "cpu",
}
# About 40 s of training here: long enough to kill its worker after the first checkpoint.
LONG_SPEC = {
    "name": "compose-killed-worker", "regime": "constrained",
    "model": {"arch": "shallow", "width": 64}, "data": {"source": "synthetic", "n": 256, "d": 10},
    "optim": {"name": "gd", "lr": 0.05, "iterations": 160_000}, "metrics_every": 500, "checkpoint_every": 10_000,
    "device": "cpu",
}


def write_mnist(folder: Path, n_train: int = 96, n_test: int = 32) -> None:
    """MNIST's four IDX files (gzipped, as they are distributed), with random digits."""
    rng = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8)}
    folder.mkdir(parents=True)
    for stem, a in arrays.items():
        header = struct.pack(">BBBB", 0, 0, 0x08, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape)
        (folder / f"{stem}.gz").write_bytes(gzip.compress(header + a.tobytes()))
    os.chmod(folder, 0o755)


def poll(what: str, check: Callable[[], Any], timeout: float, every: float = 0.5, context: Callable[[], str] = str
         ) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}\n{context()}")
        time.sleep(every)


class Stack:
    """One compose project of docker-compose.yml, driven by podman-compose with a .env of its own."""

    def __init__(self, podman: Podman, variables: dict[str, str], project: str, env_file: Path) -> None:
        self.podman, self.project, self.variables = podman, project, variables
        env_file.write_text("".join(f"{k}={v}\n" for k, v in variables.items()))
        self.argv = [str(VENV_BIN / "podman-compose"), "--project-name", project, "--env-file", str(env_file),
                     "--file", str(COMPOSE_FILE)]
        self.url = f"http://127.0.0.1:{variables['API_PORT']}"

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([*self.argv, *args], env=self.podman.env, capture_output=True, text=True,
                                timeout=timeout, cwd=COMPOSE_FILE.parent, stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise AssertionError(f"podman-compose {' '.join(args)} exited {result.returncode}:\n{tail(result)}\n"
                                 f"{self.logs()}")
        return result

    def readme(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """README's `docker compose ARGS`, as `podman-compose ARGS` on this project."""
        assert argv[:2] == ["docker", "compose"], argv
        return self.compose(*argv[2:], **kwargs)

    def containers(self, service: str) -> list[str]:
        result = self.podman.run("ps", "-a", "--format", "{{.Names}}",
                                 "--filter", f"label=io.podman.compose.project={self.project}",
                                 "--filter", f"label=com.docker.compose.service={service}")
        return result.stdout.split()

    def container(self, service: str) -> str:
        (name,) = self.containers(service)
        return name

    def state(self, service: str) -> dict[str, Any]:
        return json.loads(self.podman.inspect(self.container(service), "{{json .State}}"))

    def logs(self, chars: int = 2500) -> str:
        parts = []
        for service in sorted(CPU_SERVICES):
            for name in self.containers(service):
                out = self.podman.run("logs", name, check=False)
                parts.append(f"--- {name} ---\n{(out.stdout + out.stderr)[-chars:]}")
        return "\n".join(parts)

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200
        except httpx.TransportError:
            return False


@pytest.fixture(scope="module")
def podman() -> Podman:
    lacking = missing_tools()
    if lacking:
        reason = f"the compose stack test needs {', '.join(lacking)} (tests/compose/install.sh installs them)"
        if in_ci():
            pytest.fail(f"{reason}; CI=true requires it", pytrace=False)
        pytest.skip(reason)
    return Podman()


@pytest.fixture(scope="module")
def images(podman: Podman) -> dict[str, str]:
    """The images, each built only when its cache misses; how long each took is printed (pytest -s shows it)."""
    def timed(what: str, make: Callable[[], str]) -> str:
        started = time.monotonic()
        tag = make()
        print(f"compose stack: {what}: {tag} in {time.monotonic() - started:.0f}s")
        return tag

    base = timed("base image", podman.base_image)
    build = load(env_example())["services"]["api"]["build"]
    images = {"NARROWNET_IMAGE": timed("narrownet image (wheels, offline build)",
                                       lambda: podman.narrownet_image(base, build, "localhost/narrownet-test:cpu")),
              "POSTGRES_IMAGE": timed("postgres stand-in", lambda: podman.standin("postgres", base)),
              "REDIS_IMAGE": timed("redis stand-in", lambda: podman.standin("redis", base))}
    podman.forget_stale([base, images["POSTGRES_IMAGE"], images["REDIS_IMAGE"]])
    return images


@pytest.fixture(scope="module")
def stack(podman: Podman, images: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("compose")
    write_mnist(home / "data" / "mnist")
    variables = {**env_example(), **images, "POSTGRES_PASSWORD": secrets.token_hex(12),
                 "API_PORT": str(free_port()), "HOST_DATA_DIR": str(home / "data")}
    assert set(variables) == set(env_example()), "only variables that .env.example documents"
    stack = Stack(podman, variables, f"narrownet-test-{secrets.token_hex(4)}", home / ".env")
    try:
        yield stack
    finally:
        stack.compose("down", "--volumes", "--timeout", "5", check=False, timeout=300)


def api(stack: Stack, key: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, f"{stack.url}{path}", headers={"Authorization": f"Bearer {key}"}, timeout=30,
                         **kwargs)


def finished(stack: Stack, key: str, job_id: str, timeout: float = JOB_SECONDS) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        job = api(stack, key, "GET", f"/v1/jobs/{job_id}").json()
        return job if job["status"] not in ("queued", "running") else None
    return poll(f"job {job_id} to finish", done, timeout, context=stack.logs)  # type: ignore[no-any-return]


def checkpoint_digest(stack: Stack, key: str, job_id: str) -> str:
    """Download the checkpoint as a user would and check its bytes against the server's sha256."""
    response = api(stack, key, "GET", f"/v1/jobs/{job_id}/checkpoint")
    assert response.status_code == 200, response.text
    digest = hashlib.sha256(response.content).hexdigest()
    assert digest == response.headers["X-Checkpoint-SHA256"]
    assert digest == api(stack, key, "GET", f"/v1/jobs/{job_id}/checkpoint/meta").json()["sha256"]
    return digest


def metric_steps(stack: Stack, key: str, job_id: str) -> list[int]:
    points = api(stack, key, "GET", f"/v1/jobs/{job_id}/metrics", params={"limit": 10_000}).json()
    return [point["step"] for point in points["points"]]


def bring_up(stack: Stack) -> None:
    """README's CPU-only command, less --build (the images are built offline above), then wait for the API."""
    (up,) = [argv for argv in readme_compose_commands() if "up" in argv and "gpu" not in argv]
    stack.readme([arg for arg in up if arg != "--build"])
    assert stack.containers("worker-gpu") == [], "worker-gpu belongs to the gpu profile"
    for service in CPU_SERVICES:
        assert stack.containers(service), f"{service} was not started"
    poll("migrate to finish", lambda: stack.state("migrate")["Status"] == "exited", STARTUP_SECONDS,
         context=stack.logs)
    assert stack.state("migrate")["ExitCode"] == 0, stack.logs()
    poll("the API on the published port", stack.ready, STARTUP_SECONDS, context=stack.logs)


def test_a_user_brings_the_stack_up_runs_jobs_survives_a_killed_worker_and_a_restart(stack: Stack):
    podman = stack.podman
    bring_up(stack)

    # Published on the host's loopback only, as .env.example's default says.
    port = podman.run("port", stack.container("api"), "8000/tcp").stdout.strip()
    assert port == f"127.0.0.1:{stack.variables['API_PORT']}", port
    # Every healthcheck passes in its container (podman runs them on demand without systemd).
    for service in ("postgres", "redis", "api"):
        result = podman.run("healthcheck", "run", stack.container(service), check=False)
        assert result.returncode == 0, f"{service}'s healthcheck: {tail(result)}\n{stack.logs()}"
    assert podman.inspect(stack.container("api"), "{{.Config.User}}") == "narrownet"

    # The first key: README's command, its key alone on the last line.
    (key_command,) = [argv for argv in readme_compose_commands() if argv[2:4] == ["run", "--rm"]]
    created = stack.readme(key_command)
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("nn_"), created.stdout
    assert api(stack, "nn_wrong", "GET", "/v1/jobs").status_code == 401

    # An MNIST job reading HOST_DATA_DIR, through the published port.
    response = api(stack, key, "POST", "/v1/jobs", json=MNIST_SPEC)
    assert response.status_code == 201, response.text
    mnist = finished(stack, key, response.json()["id"])
    assert mnist["status"] == "succeeded", f"{mnist}\n{stack.logs()}"
    mnist_digest = checkpoint_digest(stack, key, mnist["id"])

    # A long job whose worker container is SIGKILLed after its first checkpoint: the restart policy brings the
    # worker back, the reconciler hands the job on once its lease runs out, and it resumes from the checkpoint.
    response = api(stack, key, "POST", "/v1/jobs", json=LONG_SPEC)
    assert response.status_code == 201, response.text
    long_id = response.json()["id"]
    poll("the long job's first checkpoint",
         lambda: api(stack, key, "GET", f"/v1/jobs/{long_id}/checkpoint/meta").status_code == 200, JOB_SECONDS,
         every=0.2, context=stack.logs)
    job = api(stack, key, "GET", f"/v1/jobs/{long_id}").json()
    assert job["status"] == "running" and job["attempt"] == 1, f"killed too late: {job}"
    worker = stack.container("worker-cpu")
    before = stack.state("worker-cpu")
    os.kill(before["Pid"], signal.SIGKILL)  # the worker's PID 1 (a crash, not `podman stop`)
    poll("the restart policy to bring the worker back",
         lambda: (s := stack.state("worker-cpu"))["Running"] and s["Pid"] != before["Pid"], 120,
         context=stack.logs)
    assert int(podman.inspect(worker, "{{.RestartCount}}")) >= 1
    long_job = finished(stack, key, long_id)
    assert long_job["status"] == "succeeded", f"{long_job}\n{stack.logs()}"
    assert long_job["attempt"] >= 2, long_job
    long_digest = checkpoint_digest(stack, key, long_id)
    long_steps = metric_steps(stack, key, long_id)
    assert long_steps == sorted(set(long_steps)) and long_steps[-1] == 160_000, "a gap or a duplicate after resume"

    # down and up again: the volumes keep jobs, metrics, checkpoints and keys.
    mnist_steps = metric_steps(stack, key, mnist["id"])
    stack.compose("down", "--timeout", "10")
    assert not any(stack.containers(service) for service in CPU_SERVICES)
    bring_up(stack)
    for job_id, digest, steps in ((mnist["id"], mnist_digest, mnist_steps), (long_id, long_digest, long_steps)):
        assert api(stack, key, "GET", f"/v1/jobs/{job_id}").json()["status"] == "succeeded"
        assert metric_steps(stack, key, job_id) == steps
        assert checkpoint_digest(stack, key, job_id) == digest
    listed = api(stack, key, "GET", "/v1/jobs").json()
    assert {mnist["id"], long_id} <= {job["id"] for job in listed["items"]}
