"""Smoke test of bench/bench_small_jobs.py: its --quick path runs all four paths, as a user runs it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.service_guard import check_postgres, check_redis, require_service

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_run_measures_every_path_and_every_job_succeeds(tmp_path):
    require_service("PostgreSQL at 127.0.0.1:5432", check_postgres)
    require_service("Redis at 127.0.0.1:6379", check_redis)  # the bench starts its own; this checks it is installed
    out = tmp_path / "small.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_small_jobs.py"), "--quick", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr

    figures = json.loads(out.read_text())
    assert set(figures["paths"]) == {"plain", "celery", "pg+redis", "embedded"}
    for path, result in figures["paths"].items():
        assert result["statuses"] == {"succeeded": figures["jobs"]}, path
        assert result["jobs_per_s"] > 0, path
    assert set(figures["ratios"]) == {"embedded / pg+redis", "pg+redis / celery", "celery / plain"}
    assert "| embedded |" in done.stdout
