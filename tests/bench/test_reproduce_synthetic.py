"""Smoke test of the synthetic reproduction: the --quick path, run as the command a user runs."""

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.orm import sessionmaker

from api.services.keys import create_key
from core.db.migrate import upgrade
from core.db.session import make_engine
from narrownet.cluster import Cluster

ROOT = Path(__file__).resolve().parents[2]


def test_quick_run_writes_one_entry_per_cell_and_config(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "bench" / "reproduce_synthetic.py"), "--quick", "--out", str(tmp_path)],
                   check=True, cwd=ROOT, capture_output=True, timeout=120)

    for name in ("synthetic.json", "synthetic.md", "synthetic.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    report = json.loads((tmp_path / "synthetic.json").read_text())
    s = report["setting"]
    expected = set(itertools.product(s["widths"], report["regimes"], s["radii"], s["lr_hidden"], s["lr_outer"],
                                     s["seeds"]))
    got = [(e["width"], e["regime"], e["radius"], e["lr_hidden"], e["lr_outer"], e["seed"]) for e in report["entries"]]
    assert len(got) == len(expected) and set(got) == expected

    for e in report["entries"]:
        assert e["loss_history"][-1] == [s["iterations"], e["train_loss"]]
        if e["radius"] is not None:  # the projection keeps W inside the ball
            assert e["w_dist"] <= e["radius"] * (1 + 1e-5)
    # Mirrored init: the output is 0 at every width, so every constrained run starts at the same loss 0.5 mean y^2.
    assert len({e["loss_history"][0][1] for e in report["entries"] if e["regime"] == "constrained"}) == 1

    md = (tmp_path / "synthetic.md").read_text()
    best = min(e["train_loss"] for e in report["entries"] if e["width"] == s["widths"][0]
               and e["regime"] == "regular" and e["radius"] is None)
    assert f"{best:.2e}" in md  # the table reports the minimum over the grid
    assert (tmp_path / "synthetic.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_the_service_path_gives_the_local_paths_numbers(tmp_path):
    """--url submits the --quick grid as one sweep to a running service (the embedded default: SQLite database and
    broker, uvicorn and a Celery worker on one torch thread, like the local run) and writes the same tables."""
    home = tmp_path / "home"
    home.mkdir()
    url = f"sqlite:///{home / 'narrownet.db'}"
    upgrade(url)
    engine = make_engine(url)
    with sessionmaker(bind=engine).begin() as s:
        _, key = create_key(s, "reproduce")
    engine.dispose()
    cluster = Cluster(home, url, f"sqla+sqlite:///{home / 'broker.db'}", {"NARROWNET_WORKER_TORCH_THREADS": "1"})
    script = [sys.executable, str(ROOT / "bench" / "reproduce_synthetic.py"), "--quick"]
    try:
        cluster.start_api(), cluster.start_worker()
        cluster.wait_api(), cluster.wait_worker()
        subprocess.run([*script, "--out", str(tmp_path / "service"), "--url", cluster.url, "--key", key],
                       check=True, cwd=ROOT, capture_output=True, timeout=600)
    finally:
        cluster.stop()
    subprocess.run([*script, "--out", str(tmp_path / "local")], check=True, cwd=ROOT, capture_output=True,
                   timeout=300)

    local, service = (json.loads((tmp_path / d / "synthetic.json").read_text()) for d in ("local", "service"))
    assert service["trained_by"] == cluster.url and local["trained_by"] == "this process"
    assert len(local["entries"]) == len(service["entries"]) == 32
    for mine, theirs in zip(local["entries"], service["entries"], strict=True):
        assert mine == theirs  # every number, the loss history included: the same packs, the same arithmetic
    tables = [(tmp_path / d / "synthetic.md").read_text().split("### ", 1)[1] for d in ("local", "service")]
    assert tables[0].split("Per-sweep wall times")[0] == tables[1].split("Per-sweep wall times")[0]
    assert (tmp_path / "service" / "synthetic.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
