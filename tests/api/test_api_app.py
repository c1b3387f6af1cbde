"""The app object: no database at import, embedded start runs the migrations, no torch on request paths."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from core.db import migrate
from tests.api.conftest import make_settings

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]


async def test_embedded_start_creates_the_schema(tmp_path: Path) -> None:
    home = tmp_path / "home"
    url = f"sqlite:///{home / 'state' / 'narrownet.db'}"
    app = create_app(make_settings(home, url, run_migrations_on_start=True))
    assert not (home / "state").exists()  # building the app touched nothing

    async with app.router.lifespan_context(app):
        assert migrate.current_revision(url) == migrate.head_revision()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            assert (await client.get("/readyz")).status_code == 200


async def test_migrations_on_start_only_for_sqlite_and_only_when_asked(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'narrownet.db'}"
    app = create_app(make_settings(tmp_path, url, run_migrations_on_start=False))
    async with app.router.lifespan_context(app):
        assert migrate.current_revision(url) is None


def test_request_paths_do_not_import_torch(tmp_path: Path) -> None:
    """Import the served module, then upload a dataset, submit, read, list and cancel a job: torch must stay
    unloaded (upload validation is numpy only)."""
    script = f"""
import io, sys, anyio, httpx, numpy as np
from core.db.migrate import upgrade
from api.services.keys import create_key
from tests.api.conftest import SPEC, make_settings
from pathlib import Path
import api.app
assert "torch" not in sys.modules, "importing api.app imported torch"
url = "sqlite:///{tmp_path / 'n.db'}"
upgrade(url)
app = api.app.create_app(make_settings(Path({str(tmp_path)!r}), url))
with app.state.runtime.sessions.begin() as s:
    _, key = create_key(s, "t")
headers = {{"Authorization": "Bearer " + key}}
async def main():
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        npz = io.BytesIO()
        np.savez(npz, X=np.ones((8, 3), np.float32), y=np.zeros(8, np.float32))
        upload = await c.post("/v1/datasets", files={{"file": ("d.npz", npz.getvalue())}}, headers=headers)
        assert upload.status_code == 201, upload.text
        job = (await c.post("/v1/jobs", json=SPEC, headers=headers)).json()
        for r in (await c.get("/v1/jobs/" + job["id"], headers=headers), await c.get("/v1/jobs", headers=headers),
                  await c.get("/v1/jobs/" + job["id"] + "/metrics", headers=headers),
                  await c.post("/v1/jobs/" + job["id"] + "/cancel", headers=headers),
                  await c.get("/readyz"), await c.get("/metrics", headers=headers)):
            assert r.status_code == 200, r.text
anyio.run(main)
assert "torch" not in sys.modules, "a request path imported torch"
print("ok")
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NARROWNET_")}
    env["NARROWNET_HOME"] = str(tmp_path / "global")  # what `import api.app` builds its module-level app from
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")
    assert not (tmp_path / "global").exists()  # the module-level app connected to nothing



def test_a_server_process_tunes_its_collector_and_an_app_built_for_tests_leaves_it_alone(tmp_path: Path) -> None:
    """create_server_app (what uvicorn --factory runs) freezes startup's objects and raises the first generation;
    create_app alone, as tests and embeddings build it, changes neither."""
    script = """
import gc
from api.app import GC_FIRST_GENERATION, create_app, create_server_app
before = (gc.get_threshold(), gc.get_freeze_count())
create_app()
assert (gc.get_threshold(), gc.get_freeze_count()) == before, "create_app touched the collector"
create_server_app()
threshold, frozen = gc.get_threshold(), gc.get_freeze_count()
assert threshold == (GC_FIRST_GENERATION, *before[0][1:]), threshold
assert frozen > before[1] + 10_000, frozen  # the modules and the app, out of every later collection
print("ok")
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NARROWNET_")}
    env["NARROWNET_HOME"] = str(tmp_path)
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")
