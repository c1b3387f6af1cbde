"""docker-compose.yml by its content, and its services' commands run as plain processes against local PostgreSQL and
Redis. tests/compose/ runs the file itself in containers."""

from __future__ import annotations

import hashlib
import importlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import AliasChoices
from sqlalchemy.engine import make_url

from core.db.migrate import current_revision
from core.settings import Settings
from narrownet.cluster import PostgresCluster, RedisServer, postgres_binary
from narrownet.processes import free_port, http_ok, start_process, stop_all, wait_until
from tests.compose.compose_file import (
    ROOT,
    MissingVariable,
    env_example,
    env_of,
    load,
    readme_compose_commands,
    started_services,
    variables_read,
)
from tests.service_guard import connections_by_name, require_service, temporary_postgres_database

COMPOSE = load(env_example())  # what a user who copied .env.example to .env gets
SERVICES = COMPOSE["services"]
OURS = sorted(name for name, svc in SERVICES.items() if "build" in svc)
VENV_BIN = Path(sys.executable).parent
CPU_STACK = {"postgres", "redis", "migrate", "api", "worker-cpu", "reconciler"}
S3_STORE = {"minio", "minio-bucket"}  # profile "s3": the object store of README's Cluster section


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


def mounts(service: dict) -> dict[str, tuple[str, str]]:
    """target -> (source, mode) of a service's short-form volumes."""
    found = {}
    for volume in service.get("volumes", []):
        source, target, *mode = volume.split(":")
        found[target] = (source, mode[0] if mode else "rw")
    return found


def test_the_stack_has_its_parts():
    assert CPU_STACK | {"worker-gpu"} | S3_STORE == set(SERVICES)
    for infra in ("postgres", "redis"):
        assert SERVICES[infra]["healthcheck"]["test"], f"{infra} needs a healthcheck"
    for name in ("api", "worker-cpu", "worker-gpu"):
        assert mounts(SERVICES[name])[env_of(SERVICES[name])["NARROWNET_ARTIFACT_DIR"]][0] == "artifacts", name
    assert "artifacts" in COMPOSE["volumes"]
    (device,) = SERVICES["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert SERVICES["worker-gpu"]["command"][-2:] == ["--concurrency", "1"]


def test_a_plain_up_starts_everything_but_the_gpu_worker():
    assert started_services(COMPOSE, ["docker", "compose", "up"]) == CPU_STACK
    assert started_services(COMPOSE, ["docker", "compose", "--profile", "gpu", "up"]) == CPU_STACK | {"worker-gpu"}
    assert started_services(COMPOSE, ["docker", "compose", "--profile", "s3", "up"]) == CPU_STACK | S3_STORE
    assert {name for name, svc in SERVICES.items() if svc.get("profiles")} == {"worker-gpu"} | S3_STORE


def test_readmes_commands_for_cpu_only_and_gpu_hosts_both_start_the_reconciler():
    ups = [argv for argv in readme_compose_commands() if "up" in argv]
    gpu = [argv for argv in ups if "gpu" in argv]
    cpu = [argv for argv in ups if "gpu" not in argv]
    assert cpu and gpu, f"README gives no compose command for CPU-only or for GPU hosts: {ups}"
    for argv in cpu:
        assert started_services(COMPOSE, argv) == CPU_STACK, argv
    for argv in gpu:
        assert started_services(COMPOSE, argv) == CPU_STACK | {"worker-gpu"}, argv


def test_every_variable_the_file_reads_is_documented_in_env_example():
    documented = set(env_example())
    assert sorted(variables_read() - documented) == [], "read by docker-compose.yml, missing from .env.example"
    assert sorted(documented - variables_read()) == [], "in .env.example, read by nothing"


def test_the_postgres_password_comes_from_env_only():
    with pytest.raises(MissingVariable, match="POSTGRES_PASSWORD.*\\.env"):
        load({})
    password = "s3cretFromDotEnv"
    compose = load({"POSTGRES_PASSWORD": password})
    assert compose["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] == password
    for name in OURS:
        url = make_url(env_of(compose["services"][name])["NARROWNET_DATABASE_URL"])
        assert (url.username, url.password, url.host, url.database) == ("narrownet", password, "postgres", "narrownet")
    assert password not in (ROOT / "docker-compose.yml").read_text()
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=ROOT).returncode == 0
    assert ignored, ".env must be git-ignored"
    assert ".env" in (ROOT / ".dockerignore").read_text().split(), ".env must stay out of the build context"


def test_the_api_is_published_on_loopback_by_default():
    assert SERVICES["api"]["ports"] == ["127.0.0.1:8000:8000"]
    assert [name for name, svc in SERVICES.items() if svc.get("ports")] == ["api", "minio"]
    assert SERVICES["minio"]["ports"] == ["127.0.0.1:9000:9000"]
    elsewhere = load({**env_example(), "API_ADDRESS": "0.0.0.0", "API_PORT": "9000"})
    assert elsewhere["services"]["api"]["ports"] == ["0.0.0.0:9000:8000"]


def test_narrownet_data_dir_is_a_host_folder_mounted_read_only():
    for name in OURS:
        service = SERVICES[name]
        data_dir = env_of(service)["NARROWNET_DATA_DIR"]
        assert mounts(service)[data_dir] == ("./data", "ro"), name
    moved = load({**env_example(), "HOST_DATA_DIR": "/srv/datasets"})
    assert mounts(moved["services"]["worker-cpu"])["/var/lib/narrownet/data"] == ("/srv/datasets", "ro")


def test_image_names_are_variables_that_default_to_the_official_images():
    defaults = load({"POSTGRES_PASSWORD": "x"})["services"]
    assert {n: s["image"] for n, s in defaults.items()} == {
        "postgres": "postgres:16", "redis": "redis:7", "migrate": "narrownet:cpu", "api": "narrownet:cpu",
        "worker-cpu": "narrownet:cpu", "reconciler": "narrownet:cpu", "worker-gpu": "narrownet:cu130",
        "minio": "minio/minio:RELEASE.2025-04-22T22-12-26Z", "minio-bucket": "minio/mc:RELEASE.2025-04-16T18-13-26Z"}
    swapped = load({"POSTGRES_PASSWORD": "x", "POSTGRES_IMAGE": "pg:test", "NARROWNET_IMAGE": "nn:test"})["services"]
    assert swapped["postgres"]["image"] == "pg:test" and swapped["api"]["image"] == "nn:test"


def test_only_the_api_waits_for_migrate_so_workers_and_reconciler_stay_restartable():
    """podman never restarts a container that requires an exited one (migrate, once done): the processes that
    must come back after a crash depend only on the long-running services; migrate itself waits for the database."""
    assert SERVICES["migrate"]["restart"] == "no" and "depends_on" not in SERVICES["migrate"]
    assert SERVICES["migrate"]["command"][-2:] == ["--wait", "120"]
    assert SERVICES["api"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    for name in ("worker-cpu", "worker-gpu", "reconciler"):
        assert SERVICES[name]["restart"] == "unless-stopped", name
        assert set(SERVICES[name]["depends_on"]) == {"postgres", "redis"}, name
    for name in CPU_STACK - {"migrate"}:
        assert SERVICES[name]["restart"] == "unless-stopped", name


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
    compose = load({**env_example(), "NARROWNET_ARTIFACT_URL": "s3://narrownet/artifacts",
                    "AWS_SECRET_ACCESS_KEY": "from-dot-env"})
    env = env_of(compose["services"]["api"])
    assert env["AWS_ENDPOINT_URL"] == "http://minio:9000" and env["NARROWNET_ARTIFACT_URL"] == "s3://narrownet/artifacts"
    assert compose["services"]["minio"]["environment"]["MINIO_ROOT_PASSWORD"] == "from-dot-env"
    assert "from-dot-env" not in (ROOT / "docker-compose.yml").read_text()  # the secret comes from .env only
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


# ------------------------------------------------------------------ the services' commands, as processes
def narrownet_cli(*args: str, database_url: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NARROWNET_")}
    return subprocess.Popen([str(VENV_BIN / "narrownet"), *args], text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**env, "NARROWNET_DATABASE_URL": database_url})


@pytest.mark.service
def test_migrate_waits_for_a_database_that_starts_after_it():
    require_service("PostgreSQL's server programs (initdb, pg_ctl)",
                    lambda: (postgres_binary("initdb"), postgres_binary("pg_ctl")))
    cluster = PostgresCluster()  # its port is chosen; nothing listens there until start()
    try:
        migrate = narrownet_cli(*SERVICES["migrate"]["command"][1:], database_url=cluster.url())
        cluster.init()
        assert migrate.poll() is None, "gave up before the database started"
        cluster.start()
        out, err = migrate.communicate(timeout=180)
        assert migrate.returncode == 0, err
        assert current_revision(cluster.url()) is not None
    finally:
        cluster.destroy()


def test_migrate_names_the_database_it_waited_for_without_its_password():
    url = f"postgresql+psycopg://narrownet:s3cret@127.0.0.1:{free_port()}/narrownet"
    out, err = narrownet_cli("db", "upgrade", "--wait", "1", database_url=url).communicate(timeout=120)
    assert "did not accept connections within 1s" in err and "127.0.0.1" in err, err
    assert "s3cret" not in out + err



def as_local_process(service: dict, database_url: str, broker_url: str, home: Path) -> dict[str, str]:
    """A service's environment with the compose network's names swapped for the local servers: the user, host and
    database of the URL (the driver stays compose's), the broker, and the volumes' paths under `home`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NARROWNET_")}
    for key, value in env_of(service).items():
        env[key] = value.replace("/var/lib/narrownet", str(home))
    compose_url, local = make_url(env["NARROWNET_DATABASE_URL"]), make_url(database_url)
    assert compose_url.host == "postgres" and make_url(env["NARROWNET_BROKER_URL"]).host == "redis"
    env["NARROWNET_DATABASE_URL"] = compose_url.set(username=local.username, password=local.password,
                                                    host=local.host, port=local.port,
                                                    database=local.database).render_as_string(hide_password=False)
    env["NARROWNET_BROKER_URL"] = broker_url
    return env


def argv_of(command: list[str], api_port: int) -> list[str]:
    argv = [str(VENV_BIN / command[0]), *command[1:]]
    if command[0] == "uvicorn":  # published on a free loopback port instead of the container's 0.0.0.0:8000
        argv[argv.index("--host") + 1], argv[argv.index("--port") + 1] = "127.0.0.1", str(api_port)
    return argv


@pytest.fixture
def local_servers(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A database of the test's own on the local PostgreSQL, and a redis-server of its own (no number to share)."""
    require_service("redis-server", RedisServer.binary)
    redis = RedisServer(tmp_path)
    with temporary_postgres_database("narrownet_compose") as database_url:
        try:
            redis.start()
            yield database_url, redis.url()
        finally:
            redis.kill()


@pytest.mark.service
@pytest.mark.slow
def test_the_services_commands_and_readmes_first_key_command_run_a_job_as_processes(
        local_servers: tuple[str, str], tmp_path: Path):
    (key_command,) = [argv for argv in readme_compose_commands() if argv[2:5] == ["run", "--rm", "api"]]
    assert key_command[5:] == ["narrownet", "keys", "create", "alice"]
    api_port, url = (port := free_port()), f"http://127.0.0.1:{port}"
    envs = {name: as_local_process(SERVICES[name], *local_servers, tmp_path) for name in CPU_STACK & set(OURS)}
    (tmp_path / "artifacts").mkdir()
    migrate = subprocess.run(argv_of(SERVICES["migrate"]["command"], api_port), env=envs["migrate"],
                             capture_output=True, text=True, timeout=180)
    assert migrate.returncode == 0, migrate.stderr
    processes = {}
    try:
        for name in ("api", "worker-cpu", "reconciler"):
            log = tmp_path / f"{name}.log"
            processes[name] = start_process(argv_of(SERVICES[name]["command"], api_port), envs[name], log)
        wait_until(lambda: http_ok(f"{url}/readyz") or any(p.poll() is not None for p in processes.values()),
                   120, "the API to be ready")
        assert all(p.poll() is None for p in processes.values()), logs(tmp_path)
        key = subprocess.run(argv_of(key_command[5:], api_port), env=envs["api"], capture_output=True, text=True,
                             timeout=120)
        assert key.returncode == 0, key.stderr
        headers = {"Authorization": f"Bearer {key.stdout.strip().splitlines()[-1]}"}
        spec = {"name": "compose-processes", "regime": "constrained", "model": {"arch": "shallow", "width": 8},
                "data": {"source": "synthetic", "n": 32, "d": 4}, "optim": {"name": "gd", "lr": 0.1, "iterations": 200},
                "checkpoint_every": 100}
        created = httpx.post(f"{url}/v1/jobs", json=spec, headers=headers, timeout=30)
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]
        deadline = time.monotonic() + 180
        while (job := httpx.get(f"{url}/v1/jobs/{job_id}", headers=headers, timeout=30).json())["status"] in (
                "queued", "running"):
            assert time.monotonic() < deadline, f"{job}\n{logs(tmp_path)}"
            time.sleep(0.5)
        assert job["status"] == "succeeded", f"{job}\n{logs(tmp_path)}"
        checkpoint = httpx.get(f"{url}/v1/jobs/{job_id}/checkpoint", headers=headers, timeout=30)
        assert checkpoint.status_code == 200
        assert hashlib.sha256(checkpoint.content).hexdigest() == checkpoint.headers["X-Checkpoint-SHA256"]
        assert list((tmp_path / "artifacts").rglob("*.safetensors")), "checkpoints go to the artifacts volume"
        # Each process names its connections, so that whoever sizes max_connections sees who holds which.
        assert set(connections_by_name(local_servers[0])) >= {
            "narrownet-api", "narrownet-api-reads", "narrownet-api-writes", "narrownet-worker", "narrownet-reconciler"}
    finally:
        stop_all(processes.values())


def logs(directory: Path) -> str:
    return "\n".join(f"--- {p.name} ---\n{p.read_text(errors='replace')[-3000:]}" for p in directory.glob("*.log"))
