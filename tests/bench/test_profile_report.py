"""bench/profile_report.py reads py-spy's collapsed stacks as bench_service.py --profile writes them."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SAMPLES = """\
run (main.py:1);handle (app.py:10);query (db.py:5);wait (db.py:9) 6
run (main.py:1);handle (app.py:11);query (db.py:5) 2
run (main.py:1);handle (app.py:12);render (app.py:30) 1
run (main.py:1);idle (loop.py:3) 1
"""


def report(path: Path, *args: str) -> list[str]:
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "profile_report.py"), str(path), *args],
                          capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.splitlines()


def test_shares_count_a_function_once_per_stack_and_break_down_below_a_function(tmp_path: Path) -> None:
    path = tmp_path / "GET.txt"
    path.write_text(SAMPLES)
    lines = report(path)
    assert lines[0] == "10 samples"
    assert "100.0%  run (main.py)" in lines and " 90.0%  handle (app.py)" in lines  # 3 lines of handle, 9 samples
    assert report(path, "--below", "handle (app.py)") == [
        "10 samples", " 80.0%  query (db.py)", " 10.0%  render (app.py)"]
    assert report(path, "--below", "query (db.py)") == ["10 samples", " 60.0%  wait (db.py)", " 20.0%  <self>"]
    assert report(path, "--match", "db\\.py", "--top", "1") == ["10 samples", " 80.0%  query (db.py)"]
