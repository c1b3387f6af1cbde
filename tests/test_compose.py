"""docker-compose.yml, checked without a Docker engine: commands are real entry points, settings are real."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices

from core.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
OURS = sorted(name for name, svc in SERVICES.items() if "build" in svc)
VENV_BIN = Path(sys.executable).parent


def interpolate(value: str) -> str:
    """`${VAR:-default}` as compose fills it in from the shell: VAR when set and not empty, else the default."""
    return re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: os.environ.get(m.group(1)) or m.group(2), value)


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the "KEY=value" list form
        env = dict(item.split("=", 1) for item in env)
    return {k: interpolate(str(v)) for k, v in env.items()}


def settings_env_names() -> dict[str, str]:
    """Environment variable -> Settings field, as pydantic-settings resolves them (prefix, or the aliases)."""
    names = {}
    for field, info in Settings.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names.update({str(choice).upper(): field for choice in alias.choices})
        elif isinstance(alias, str):
            names[alias.upper()] = field
        else:
            names[f"NARROWNET_{field.upper()}"] = field
    return names


def test_the_stack_has_its_parts():
    assert {"postgres", "redis", "api", "worker-cpu", "worker-gpu"} <= set(SERVICES)
    for infra in ("postgres", "redis"):
        assert SERVICES[infra]["healthcheck"]["test"], f"{infra} needs a healthcheck"
    for name in ("api", "worker-cpu", "worker-gpu"):
        mounts = [v.split(":")[:2] for v in SERVICES[name]["volumes"]]
        assert ["artifacts", env_of(SERVICES[name])["NARROWNET_ARTIFACT_DIR"]] in mounts, name
    assert "artifacts" in COMPOSE["volumes"]
    (device,) = SERVICES["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert SERVICES["worker-gpu"]["command"][-2:] == ["--concurrency", "1"]


@pytest.mark.parametrize("name", OURS)
def test_every_narrownet_variable_is_a_setting_with_a_valid_value(name, monkeypatch):
    known = settings_env_names()
    env = {k: v for k, v in env_of(SERVICES[name]).items() if k.startswith("NARROWNET_")}
    assert env, f"{name} sets no NARROWNET_* variable"
    unknown = sorted(set(env) - set(known))
    assert not unknown, f"{name}: {unknown} are not fields of core.settings.Settings"
    for key in list(known):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()  # raises if a value does not validate
    for key, value in env.items():
        assert key in known and (getattr(settings, known[key]) is not None or value == "")  # "": left unset


def test_the_s3_profile_runs_a_store_and_the_setting_that_uses_it_validates(monkeypatch):
    for name in ("minio", "minio-bucket"):
        assert SERVICES[name]["profiles"] == ["s3"], f"{name} must not start without --profile s3"
    assert SERVICES["minio"]["healthcheck"]["test"]
    monkeypatch.setenv("NARROWNET_ARTIFACT_URL", "s3://narrownet/artifacts")
    env = env_of(SERVICES["api"])
    assert env["AWS_ENDPOINT_URL"] == "http://minio:9000" and env["NARROWNET_ARTIFACT_URL"] == "s3://narrownet/artifacts"
    bucket = SERVICES["minio-bucket"]["entrypoint"][-1].removeprefix("store/")
    assert Settings(artifact_url=env["NARROWNET_ARTIFACT_URL"]).artifact_url == f"s3://{bucket}/artifacts"


@pytest.mark.parametrize("name", OURS)
def test_every_command_is_a_real_entry_point(name):
    command = SERVICES[name]["command"]
    assert isinstance(command, list), f"{name}: use the exec (list) form, so signals reach the process"
    executable = VENV_BIN / command[0]
    assert executable.exists(), f"{name}: {command[0]} is not installed in the environment"
    # --help after the real arguments: an unknown option or subcommand still fails to parse.
    result = subprocess.run([str(executable), *command[1:], "--help"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, f"{name}: {command} --help exited {result.returncode}\n{result.stderr}"
    if command[0] == "uvicorn":
        # uvicorn answers --help without importing the app, so import it here.
        module, attr = command[1].split(":")
        assert callable(getattr(importlib.import_module(module), attr))


def test_readme_configuration_table_lists_every_setting():
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Configuration"):readme.index("## API")]
    missing = sorted(env for env in settings_env_names() if f"`{env}`" not in table)
    assert not missing, f"README's configuration table lacks {missing}"
