"""The `narrownet` command as a new user meets it, through its real entry point against a real stack."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path

import pytest

from narrownet.client import NarrownetClient
from narrownet.processes import free_port, wait_until
from tests.e2e.conftest import VENV_BIN, Stack, shallow_spec

pytestmark = pytest.mark.service


def write_spec(path: Path, name: str, iterations: int = 200, **extra: object) -> Path:
    spec = shallow_spec(name, "constrained", {"source": "synthetic", "n": 32, "d": 4}, iterations=iterations,
                        **extra)
    path.write_text(json.dumps(spec))
    return path


class TestSubmitAndFollow:
    def test_submit_wait_prints_the_id_first_then_a_summary_not_json(self, stack: Stack, keys: dict[str, str],
                                                                       tmp_path: Path):
        spec = write_spec(tmp_path / "spec.json", "cli-summary")
        result = stack.cli("submit", str(spec), "--wait", "--key", keys["alice"])
        lines = result.stdout.strip().splitlines()
        assert lines[0].startswith("submitted job ") and "cli-summary" in lines[0]
        job_id = lines[0].split()[2]
        assert len(job_id) == 32
        assert "status: succeeded" in result.stdout and "train_loss=" in result.stdout
        assert f"narrownet fetch {job_id[:12]} -o model.safetensors" in result.stdout
        assert not result.stdout.lstrip().startswith("{")  # a summary, not a JSON dump

    def test_ctrl_c_while_waiting_leaves_the_job_running_and_says_how_to_follow_it(
            self, stack: Stack, keys: dict[str, str], alice: NarrownetClient, tmp_path: Path):
        spec = write_spec(tmp_path / "long.json", "cli-ctrl-c", iterations=5_000_000, metrics_every=1000)
        process = subprocess.Popen([str(VENV_BIN / "narrownet"), "submit", str(spec), "--wait", "--key",
                                    keys["alice"]], env=stack.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
        try:
            first = process.stdout.readline() if process.stdout else ""
            job_id = first.split()[2]
            wait_until(lambda: alice.job(job_id)["status"] == "running", 60, "the job to start")
            process.send_signal(signal.SIGINT)
            _, stderr = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
        try:
            assert process.returncode == 130
            assert f"job {job_id} keeps running" in stderr and f"narrownet cancel {job_id[:12]}" in stderr
            assert "Traceback" not in stderr
            assert alice.job(job_id)["status"] == "running"
        finally:
            alice.cancel(job_id)
            alice.wait(job_id, timeout=60, poll_interval=0.2)

    def test_cancel_says_what_happens_next(self, stack: Stack, keys: dict[str, str], alice: NarrownetClient,
                                           tmp_path: Path):
        job = alice.submit(json.loads(write_spec(tmp_path / "c.json", "cli-cancel", iterations=5_000_000,
                                                 metrics_every=1000).read_text()))
        wait_until(lambda: alice.job(job["id"])["status"] == "running", 60, "the job to start")
        said = stack.cli("cancel", job["id"][:12], "--key", keys["alice"]).stdout
        assert "cancel requested" in said and "stops within a few seconds" in said and '"status"' not in said
        again = stack.cli("cancel", job["id"], "--wait", "--key", keys["alice"]).stdout
        assert alice.job(job["id"])["status"] == "cancelled"
        assert "cancelled" in again
        ended = stack.cli("cancel", job["id"], "--key", keys["alice"]).stdout
        assert "had already ended (cancelled)" in ended


class TestShortIds:
    def test_list_shows_ids_every_command_accepts_and_the_latest_loss(self, stack: Stack, keys: dict[str, str],
                                                                       alice: NarrownetClient, tmp_path: Path):
        job = alice.submit(json.loads(write_spec(tmp_path / "s.json", "cli-list").read_text()))
        alice.wait(job["id"], timeout=120, poll_interval=0.2)
        listed = stack.cli("list", "--name", "cli-list", "--key", keys["alice"],
                           env_extra={"COLUMNS": "80"}).stdout
        row = next(line for line in listed.splitlines() if job["id"][:12] in line)
        assert "succeeded" in row
        loss = alice.job(job["id"])["final_metrics"]["train_loss"]
        assert f"{loss:.3g}" in row
        status = stack.cli("status", job["id"][:12], "--key", keys["alice"]).stdout
        assert f"job {job['id']}" in status and "status: succeeded" in status

    def test_an_ambiguous_prefix_names_the_jobs_it_matches(self, stack: Stack, keys: dict[str, str],
                                                            alice: NarrownetClient, tmp_path: Path):
        spec = json.loads(write_spec(tmp_path / "a.json", "cli-prefix", iterations=10).read_text())
        by_first: dict[str, list[str]] = {}
        while True:  # 17 ids always share a first hex digit (pigeonhole)
            job_id = alice.submit(spec)["id"]
            by_first.setdefault(job_id[0], []).append(job_id)
            if len(by_first[job_id[0]]) == 2:
                break
        first, ids = job_id[0], by_first[job_id[0]]
        result = stack.cli("status", first, "--key", keys["alice"], check=False)
        assert result.returncode == 1
        assert f"{first!r} matches" in result.stderr and all(i in result.stderr for i in ids)
        missing = stack.cli("status", "fffffffffff0", "--key", keys["alice"], check=False)
        if not any(i.startswith("fffffffffff0") for i in ids):
            assert "no job id starts with 'fffffffffff0'" in missing.stderr


class TestErrorsName:
    def test_no_key_says_how_to_give_one(self, stack: Stack):
        env = {k: v for k, v in stack.env.items() if k != "NARROWNET_API_KEY"}
        result = subprocess.run([str(VENV_BIN / "narrownet"), "list"], env=env, capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 1
        assert "set NARROWNET_API_KEY or pass --key" in result.stderr and "Traceback" not in result.stderr

    def test_a_server_that_is_down_is_named(self, stack: Stack):
        url = f"http://127.0.0.1:{free_port()}"
        result = stack.cli("list", "--url", url, "--key", "nn_x", check=False)
        assert result.returncode == 1
        assert f"cannot reach {url}" in result.stderr and "narrownet serve" in result.stderr


class TestDatasetsByName:
    def test_a_spec_may_name_an_uploaded_dataset(self, stack: Stack, keys: dict[str, str], alice: NarrownetClient,
                                                  tmp_path: Path):
        import numpy as np

        rng = np.random.default_rng(0)
        np.savez(tmp_path / "d.npz", X=rng.standard_normal((40, 3)).astype(np.float32),
                 y=rng.standard_normal(40).astype(np.float32))
        said = stack.cli("datasets", "upload", str(tmp_path / "d.npz"), "--name", "cli-named", "--key",
                         keys["alice"]).stdout
        assert '"source": "dataset", "name": "cli-named"' in said
        spec = shallow_spec("cli-by-name", "constrained", {"source": "dataset", "name": "cli-named"}, iterations=50)
        job = alice.wait(alice.submit(spec)["id"], timeout=120, poll_interval=0.2)
        assert job["status"] == "succeeded", job["error"]
        uploaded = alice.datasets()["items"]
        assert job["spec"]["data"]["id"] == next(d["id"] for d in uploaded if d["name"] == "cli-named")

        spec["data"] = {"source": "dataset", "name": "no-such-data"}
        (tmp_path / "bad.json").write_text(json.dumps(spec))
        bad = stack.cli("submit", str(tmp_path / "bad.json"), "--key", keys["alice"], check=False)
        assert bad.returncode == 1 and bad.stderr.count("no dataset named 'no-such-data'") == 1


class TestKeys:
    def test_keys_list_and_revoke_take_effect_at_once(self, stack: Stack):
        key = stack.create_key("carol")
        with NarrownetClient(stack.url, key) as carol:
            assert carol.jobs()["total"] == 0
            listed = stack.cli("keys", "list").stdout
            assert "carol" in listed and key[:11] in listed and key not in listed
            said = stack.cli("keys", "revoke", key[:11]).stdout
            assert "revoked key" in said and "carol" in said
            with pytest.raises(Exception) as refused:
                carol.jobs()
            assert getattr(refused.value, "status_code", None) == 401
        assert "carol" not in stack.cli("keys", "list").stdout
        assert "carol" in stack.cli("keys", "list", "--all").stdout


def test_worker_logs_name_the_job_and_its_real_outcome(stack: Stack, alice: NarrownetClient, tmp_path: Path):
    bad = shallow_spec("cli-diverges", "regular", {"source": "synthetic", "n": 16, "d": 4}, iterations=200)
    bad["optim"]["lr"] = 100.0
    job = alice.wait(alice.submit(bad)["id"], timeout=120, poll_interval=0.2)
    assert job["status"] == "failed"
    log = stack.logs["worker"]

    def logged() -> bool:
        return f"job {job['id']} attempt 1: failed" in log.read_text()

    wait_until(logged, 30, "the worker's outcome line")
    assert not re.search(r"Task narrownet\.run_job\[[^\]]+\] succeeded", log.read_text())
