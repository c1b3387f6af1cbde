"""The locks: runtime (requirements.lock, what the image gets) and dev (requirements-dev.lock) pin exactly what
pyproject.toml's dependencies pull in, and the image installs the runtime set and a torch build's lock only.

The dependency closure is read from the installed packages' metadata (the venv `make setup` built from the locks),
so a lock that misses a package, pins another version, or carries a dev tool into the image fails here."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import yaml
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# Markers are judged for every Python the locks serve: 3.11 from its first patch release (Debian 12's python3 is
# 3.11.2, the official image's is newer) to the one running the tests.
PYTHONS = [{"python_version": "3.11", "python_full_version": v} for v in ("3.11.0", "3.11.2", "3.11.99")]


def lock(name: str) -> tuple[dict[str, str], dict[str, Marker], list[str]]:
    """name -> pinned version, name -> marker (lines that carry one), and the -r includes."""
    pins, markers, includes = {}, {}, []
    for raw in (ROOT / name).read_text().splitlines():
        line = re.sub(r"\s+#.*$", "", raw).strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-r "):
            includes.append(line[3:].strip())
            continue
        req = Requirement(line)
        (spec,) = req.specifier
        assert spec.operator == "==", f"{name}: {raw!r} is not an exact pin"
        pins[canonicalize_name(req.name)] = spec.version
        if req.marker is not None:
            markers[canonicalize_name(req.name)] = req.marker
    return pins, markers, includes


def applies(requirement: Requirement, extras: set[str]) -> bool:
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({**python, "extra": extra})
               for python in PYTHONS for extra in extras | {""})


def closure(roots: list[str]) -> tuple[dict[str, str], dict[str, Requirement]]:
    """Installed name -> version for everything `roots` pull in, and the requirements that apply to some Python
    3.11 but not to this one (so they are not installed here: the lock must still pin them, with a marker)."""
    installed: dict[str, str] = {}
    elsewhere: dict[str, Requirement] = {}
    extras_seen: dict[str, set[str]] = {}
    todo = [Requirement(r) for r in roots]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        try:
            dist = distribution(req.name)
        except PackageNotFoundError:
            elsewhere[name] = req
            continue
        extras = extras_seen.get(name, set())
        if name in installed and set(req.extras) <= extras:
            continue
        extras_seen[name] = extras | set(req.extras)
        installed[name] = dist.version
        for text in dist.requires or []:
            sub = Requirement(text)
            if applies(sub, extras_seen[name]):
                todo.append(sub)
    return installed, elsewhere


def public(version: str) -> str:
    return Version(version).public  # torch 2.13.0+cpu is the lock's 2.13.0


def check_lock_is_closure(pins: dict[str, str], markers: dict[str, Marker], roots: list[str],
                          less: dict[str, str] | None = None) -> None:
    installed, elsewhere = closure(roots)
    for name in less or {}:
        installed.pop(name, None)
        elsewhere.pop(name, None)
    missing = sorted(set(installed) - set(pins))
    extra = sorted(set(pins) - set(installed) - set(elsewhere))
    wrong = sorted(f"{n}: lock {pins[n]}, installed {v}" for n, v in installed.items()
                   if n in pins and pins[n] != public(v))
    assert not missing, f"pulled in but not pinned: {missing}"
    assert not extra, f"pinned but nothing pulls it in: {extra}"
    assert not wrong, f"pins that differ from what is installed: {wrong}"
    for name, req in elsewhere.items():
        assert name in pins, f"{req} applies to some Python 3.11 and is not pinned"
        assert req.specifier.contains(pins[name]), f"{name}=={pins[name]} does not satisfy {req}"
        assert name in markers, f"{name} is not installed here, so its line needs the marker of {req}"


def test_pyproject_pins_every_direct_dependency_exactly_as_the_locks_do():
    runtime, _, _ = lock("requirements.lock")
    dev, _, _ = lock("requirements-dev.lock")
    for text, pins in [*((t, runtime) for t in PROJECT["dependencies"]),
                       *((t, dev) for t in PROJECT["optional-dependencies"]["dev"])]:
        req = Requirement(text)
        (spec,) = req.specifier
        assert spec.operator == "==", f"pyproject.toml: {text!r} is not an exact pin"
        assert pins.get(canonicalize_name(req.name)) == spec.version, f"{text}: the lock pins another version"


def test_runtime_lock_is_exactly_what_the_runtime_dependencies_pull_in():
    pins, markers, includes = lock("requirements.lock")
    assert not includes
    check_lock_is_closure(pins, markers, PROJECT["dependencies"])


def test_dev_lock_is_the_runtime_lock_plus_exactly_what_the_dev_tools_pull_in():
    runtime, _, _ = lock("requirements.lock")
    pins, markers, includes = lock("requirements-dev.lock")
    assert includes == ["requirements.lock"]
    twice = sorted(set(pins) & set(runtime))
    assert not twice, f"the dev lock pins again what requirements.lock pins: {twice}"
    check_lock_is_closure(pins, markers, PROJECT["dependencies"] + PROJECT["optional-dependencies"]["dev"],
                          less=runtime)
    for tool in ("pytest", "ruff", "mypy", "schemathesis", "hypothesis", "import-linter", "podman-compose"):
        assert tool in pins and tool not in runtime, tool


def test_each_torch_build_has_a_lock_that_only_adds_to_the_runtime_lock():
    runtime, _, _ = lock("requirements.lock")
    torch = runtime["torch"]
    cpu, _, _ = lock("requirements-cpu.lock")
    assert cpu == {"torch": f"{torch}+cpu"}, "the CPU build needs nothing requirements.lock lacks"
    cuda, _, includes = lock("requirements-cu130.lock")
    assert not includes and "torch" not in cuda, "PyPI's torch==2.13.0 is the CUDA 13.0 build: pinned once"
    twice = sorted(set(cuda) & set(runtime))
    assert not twice, f"the CUDA lock pins again what requirements.lock pins: {twice}"
    assert "triton" in cuda and any(name.startswith("nvidia-") for name in cuda)


def test_the_image_installs_the_runtime_lock_and_its_torch_builds_lock_only():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "requirements-dev.lock" not in dockerfile
    install = dockerfile[dockerfile.index("pip install $source"):].split("\n\n")[0]
    assert "requirements.lock" in install and "requirements-${TORCH_VARIANT}.lock" in install
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    variants = {svc["build"]["args"]["TORCH_VARIANT"] for svc in compose["services"].values() if "build" in svc}
    assert variants == {"cpu", "cu130"}
    for variant in variants:
        assert (ROOT / f"requirements-{variant}.lock").exists(), variant


def test_the_image_copies_every_package_the_project_installs():
    """`pip install .` in the image installs what is there; a package left out of a COPY is missing at run time."""
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = sorted({pattern.rstrip("*") for pattern in include["include"]})
    dockerfile = (ROOT / "Dockerfile").read_text()
    for package in packages:
        assert (ROOT / package).is_dir(), package
        assert re.search(rf"^COPY {package} \./{package}$", dockerfile, re.M), f"the image does not COPY {package}/"
