"""The container engine for tests/compose: Debian's podman (runc, tests/compose/containers.conf) and podman-compose,
and the images the stack runs on, built here with no registry to pull from.

  base image      debootstrap's minbase Debian 12 with python3, imported with `podman import`
  stand-ins       postgres:16 and redis:7 look-alikes: Debian's packages on the base (tests/compose/standins/)
  narrownet       the project's Dockerfile, built offline (--network none) on the base from wheels made on the host

The base image, the stand-ins and the wheels are cached on this machine, keyed by a digest of what each is made
from (the wheels by the lock files), so a rerun only rebuilds narrownet's own layers.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.compose.compose_file import COMPOSE_FILE, ROOT

HERE = Path(__file__).resolve().parent
STANDINS = HERE / "standins"
CACHE = Path(os.environ.get("NARROWNET_COMPOSE_CACHE", Path.home() / ".cache" / "narrownet" / "compose"))
VENV_BIN = Path(sys.executable).parent
DEBIAN = ("bookworm", ("python3", "python3-venv"))  # from debootstrap's default mirror
RUNTIME_LOCKS = ("requirements.lock", "requirements-cpu.lock")
TOOLS = {"podman": "apt-get install podman", "runc": "apt-get install runc",
         "debootstrap": "apt-get install debootstrap", "podman-compose": "make setup (requirements-dev.lock)"}


def digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:16]


def missing_tools() -> list[str]:
    """What this machine lacks to run the stack, each with how to install it (tests/compose/install.sh does)."""
    found = {name: shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin") for name in TOOLS}
    found["podman-compose"] = str(VENV_BIN / "podman-compose") if (VENV_BIN / "podman-compose").exists() else None
    lacking = [f"{name} ({how})" for name, how in TOOLS.items() if not found[name]]
    if os.geteuid() != 0:
        lacking.append("root (debootstrap and rootful podman)")
    return lacking


class Podman:
    def __init__(self) -> None:
        self.env = {**os.environ, "CONTAINERS_CONF": str(HERE / "containers.conf")}

    def run(self, *args: str, check: bool = True, timeout: float = 900, **kwargs: object
            ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["podman", *args], env=self.env, capture_output=True, text=True, timeout=timeout,
                                **kwargs)
        if check and result.returncode != 0:
            raise RuntimeError(f"podman {' '.join(args)} exited {result.returncode}:\n{tail(result)}")
        return result

    def image_exists(self, tag: str) -> bool:
        return self.run("image", "exists", tag, check=False).returncode == 0

    def image_id(self, tag: str) -> str | None:
        result = self.run("image", "inspect", "--format", "{{.Id}}", tag, check=False)
        return result.stdout.strip() if result.returncode == 0 else None

    def inspect(self, container: str, template: str) -> str:
        return self.run("inspect", "--format", template, container).stdout.strip()

    def base_image(self) -> str:
        """Debian 12 minbase with python3 and venv, from debootstrap (about a minute, once per machine)."""
        suite, packages = DEBIAN
        tag = f"localhost/narrownet-test-base:{digest(suite, *packages)}"
        if self.image_exists(tag):
            return tag
        CACHE.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=CACHE, prefix="rootfs-") as tmp:
            rootfs = Path(tmp) / "rootfs"
            run(["debootstrap", "--variant=minbase", f"--include={','.join(packages)}", suite, str(rootfs)],
                timeout=900)
            for leftovers in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for path in (rootfs / leftovers).glob("*"):
                    if path.is_file():
                        path.unlink()
            tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
            try:
                self.run("import", "--change", 'CMD ["/bin/bash"]', "-", tag, stdin=tar.stdout)
            finally:
                tar.wait()
        return tag

    def standin(self, name: str, base: str) -> str:
        """The stand-in for the official `name` image (postgres or redis); apt reaches Debian through the host."""
        containerfile = STANDINS / f"{name}.Containerfile"
        entrypoint = STANDINS / f"{name}-entrypoint.sh"
        tag = f"localhost/narrownet-test-{name}:{digest(base, containerfile.read_bytes(), entrypoint.read_bytes())}"
        if not self.image_exists(tag):
            self.run("build", "--network", "host", "--build-arg", f"BASE_IMAGE={base}", "-f", str(containerfile),
                     "-t", tag, str(STANDINS))
        return tag

    def forget_stale(self, current: list[str]) -> None:
        """Remove the cached images of older recipes (another digest in the tag), children before the base."""
        for repository in ("localhost/narrownet-test-postgres", "localhost/narrownet-test-redis",
                           "localhost/narrownet-test-base"):
            tags = self.run("images", "--format", "{{.Repository}}:{{.Tag}}", repository).stdout.split()
            for tag in set(tags) - set(current):
                self.run("rmi", tag, check=False)

    def narrownet_image(self, base: str, build: dict[str, object], tag: str) -> str:
        """The project's Dockerfile as compose's `build:` section gives it, offline, on `base`."""
        context = (COMPOSE_FILE.parent / str(build["context"])).resolve()
        args = {**dict(build.get("args") or {}), "BASE_IMAGE": base, "WHEELS": "wheels"}
        wheels = prepare_wheels()
        in_context = context / "wheels"
        shutil.rmtree(in_context, ignore_errors=True)
        try:
            shutil.copytree(wheels, in_context, copy_function=os.link)  # hard links: no copy of 300 MB
        except OSError:
            shutil.rmtree(in_context, ignore_errors=True)
            shutil.copytree(wheels, in_context)
        previous = self.image_id(tag)
        try:
            self.run("build", "--network", "none", *(f"--build-arg={k}={v}" for k, v in args.items()),
                     "-f", str(context / str(build.get("dockerfile", "Dockerfile"))), "-t", tag, str(context))
        finally:
            shutil.rmtree(in_context, ignore_errors=True)
        if previous and previous != self.image_id(tag):
            self.run("rmi", previous, check=False)  # the last build's image; its shared layers stay
        return tag


def prepare_wheels() -> Path:
    """Every wheel the CPU image's locks name, made by the host's pip (which finds torch's CPU build locally)."""
    locks = [ROOT / name for name in RUNTIME_LOCKS]
    target = CACHE / f"wheels-{digest(*(path.read_bytes() for path in locks))}"
    if (target / ".complete").exists():
        return target
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    # Markers off: the image's Python (Debian's 3.11.2) needs lines this one skips, e.g. async-timeout.
    pins = [re.sub(r"\s*[;#].*$", "", line).strip() for path in locks for line in path.read_text().splitlines()]
    flat = target / "requirements.txt"
    flat.write_text("\n".join(pin for pin in pins if pin and not pin.startswith("-")) + "\n")
    run([str(VENV_BIN / "pip"), "wheel", "--quiet", "--no-deps", "-r", str(flat), "-w", str(target)], timeout=900)
    flat.unlink()
    (target / ".complete").touch()
    for older in CACHE.glob("wheels-*"):  # the wheels of locks that have changed since
        if older != target:
            shutil.rmtree(older, ignore_errors=True)
    return target


def run(argv: list[str], timeout: float, **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {result.returncode}:\n{tail(result)}")
    return result


def tail(result: subprocess.CompletedProcess[str], chars: int = 4000) -> str:
    return f"{(result.stdout or '')[-chars:]}\n{(result.stderr or '')[-chars:]}"
