"""Smoke test of bench/bench_group_commit.py, as a user runs it: every group size commits each of its submissions
(the script asserts it) and the table has a row per size."""

import subprocess
import sys
from pathlib import Path

from tests.service_guard import check_postgres, require_service

ROOT = Path(__file__).resolve().parents[2]


def test_a_short_run_commits_every_group_and_prints_a_row_per_size() -> None:
    require_service("PostgreSQL at 127.0.0.1:5432", check_postgres)
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_group_commit.py"), "--submissions", "64"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [int(row.split("|")[1]) for row in rows] == [1, 2, 4, 8, 16, 32]
    assert rows[0].split("|")[3].strip() == "1.00"  # the baseline, a group of one
