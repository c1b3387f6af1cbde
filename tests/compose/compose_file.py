"""docker-compose.yml read as compose reads it, for the tests that check it by content and by running it.

Interpolation of ${VAR}, ${VAR:-default} and ${VAR:?message} from an environment (compose takes .env and the
shell's variables); the services a `docker compose ... up` command starts (profiles, named services and what they
depend on); and the compose commands README gives a user.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import yaml
from dotenv import dotenv_values

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
README = ROOT / "README.md"

VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|:\?)(?P<arg>[^}]*))?\}")


class MissingVariable(ValueError):
    pass


def variables_read() -> set[str]:
    """Every variable the compose file interpolates."""
    return {m["name"] for m in VARIABLE.finditer(COMPOSE_FILE.read_text())}


def env_example() -> dict[str, str]:
    return {k: v or "" for k, v in dotenv_values(ENV_EXAMPLE).items()}


def interpolate(value: Any, env: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        current = env.get(name, "")
        if current:
            return current
        if op == ":?":
            raise MissingVariable(f"{name}: {arg}")
        return arg if op == ":-" else ""

    return VARIABLE.sub(one, value)


def load(env: dict[str, str]) -> dict[str, Any]:
    """The compose file with `env` interpolated (yaml merges the x- anchors first, as compose does)."""
    parsed: dict[str, Any] = interpolate(yaml.safe_load(COMPOSE_FILE.read_text()), env)
    return parsed


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the "KEY=value" list form
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def started_services(compose: dict[str, Any], argv: list[str]) -> set[str]:
    """The services `docker compose [--profile P]... up [options] [SERVICE...]` starts."""
    assert argv[:2] == ["docker", "compose"] and "up" in argv, argv
    up = argv.index("up")
    profiles = {argv[i + 1] for i in range(2, up) if argv[i] == "--profile"}
    named = [a for a in argv[up + 1:] if not a.startswith("-")]
    services = compose["services"]
    if named:
        started, todo = set(), list(named)
        while todo:
            name = todo.pop()
            if name not in started:
                started.add(name)
                todo.extend(services[name].get("depends_on") or [])
        return started
    return {name for name, svc in services.items() if not svc.get("profiles") or profiles & set(svc["profiles"])}


def readme_compose_commands() -> list[list[str]]:
    """The `docker compose ...` lines of README's compose section, split as a shell would (comments dropped)."""
    text = README.read_text()
    start = text.index("## Docker compose")
    section = text[start:text.index("\n## ", start + 1)]
    return [shlex.split(line, comments=True) for line in section.splitlines() if line.startswith("docker compose ")]
