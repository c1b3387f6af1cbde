"""Smoke test of bench/bench_list_page.py, as a user runs it: the page statement the service runs and the window
count it replaced give the same page and total (the script asserts it), and the table has both filters."""

import subprocess
import sys
from pathlib import Path

from tests.service_guard import check_postgres, require_service

ROOT = Path(__file__).resolve().parents[2]


def test_a_short_run_gives_the_same_pages_both_ways_and_prints_a_row_per_filter() -> None:
    require_service("PostgreSQL at 127.0.0.1:5432", check_postgres)
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_list_page.py"), "--jobs", "500",
                           "--repeat", "2"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line.split("|")[1].strip() for line in done.stdout.splitlines() if line.startswith("| ")]
    assert rows[1:] == ["none", "status=queued"], done.stdout  # after the header
