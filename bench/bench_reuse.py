"""Result reuse: resubmitting the paper's 7 x 7 learning-rate grid (Figure 4's 49 configs) once it has trained, as
49 jobs and as one sweep.

Starts an embedded stack of its own on loopback (SQLite database and SQLite-backed broker in a temporary home, one
uvicorn API, one Celery worker with one torch thread). Run:

    .venv/bin/python bench/bench_reuse.py [--iterations 300] [--clients 1] [--only jobs|sweep] [--repeats 5]

Phases (same stack, same run):
  1. jobs, train: submit the 49 configs (lr_hidden x lr_outer over the paper's grid) as 49 jobs and wait until all
     have succeeded: the baseline, what resubmitting costs without reuse;
  2. jobs, reuse: submit the same 49 specs again with the header `Reuse: succeeded`; every answer must be 200 with
     `Reused: true` and the first phase's job id. Timed from the first request to the last answer.
  3. sweep, train: POST /v1/sweeps with the same 49 configs as one sweep's grid, without reuse, and wait until it
     has succeeded (they train as packs): the sweep's baseline;
  4. sweep, reuse: the same sweep again with `Reuse: succeeded`, --repeats times: each answer must be a sweep that
     is succeeded at once, every config pointing (reused_from) at phase 3's job, no pack queued. Timed per request;
     for reference, one GET of the reused sweep's results (49 rows) is timed too.
Prints the times and their ratios.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from core.db.migrate import upgrade
from narrownet.cluster import Cluster

PAPER_GRID = [1e-4, 1e-3, 5e-3, 1e-2, 5e-2, 1e-1, 5e-1]  # the synthetic experiment's lr_hidden and lr_outer


def grid_specs(iterations: int) -> list[dict[str, Any]]:
    return [{"name": f"grid-{i}-{j}", "regime": "constrained",
             "model": {"arch": "shallow", "width": 40, "activation": "tanh"},
             "data": {"source": "synthetic", "n": 200, "d": 20, "seed": 0},
             "optim": {"name": "gd", "momentum": 0.9, "lr_hidden": lr_w, "lr_outer": lr_v, "iterations": iterations},
             "constraint": {"radius": 20.0}, "metrics_every": 100, "device": "cpu"}
            for i, lr_w in enumerate(PAPER_GRID) for j, lr_v in enumerate(PAPER_GRID)]


def create_key(cluster: Cluster) -> str:
    import subprocess

    out = subprocess.run([sys.executable, "-m", "narrownet", "keys", "create", "bench"], env=cluster.env,
                         check=True, capture_output=True, text=True, timeout=120)
    return out.stdout.strip().splitlines()[-1]


def submit_all(client: httpx.Client, specs: list[dict[str, Any]], headers: dict[str, str],
               clients: int) -> list[tuple[httpx.Response, float]]:
    def one(spec: dict[str, Any]) -> tuple[httpx.Response, float]:
        start = time.perf_counter()
        response = client.post("/v1/jobs", json=spec, headers=headers)
        return response, time.perf_counter() - start

    with ThreadPoolExecutor(max_workers=clients) as pool:
        return list(pool.map(one, specs))


def sweep_body(iterations: int) -> dict[str, Any]:
    base = {**grid_specs(iterations)[0], "name": "figure4", "optim": {"name": "gd", "momentum": 0.9, "lr": 0.1,
                                                                     "iterations": iterations}}
    return {"name": "figure4", "base": base, "grid": {"optim.lr_hidden": PAPER_GRID, "optim.lr_outer": PAPER_GRID},
            "objective": {"metric": "train_loss", "mode": "min"}}


def wait_sweep(client: httpx.Client, sweep_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sweep: dict[str, Any] = client.get(f"/v1/sweeps/{sweep_id}").json()
        if sweep["status"] in ("succeeded", "failed", "cancelled"):
            return sweep
        time.sleep(0.5)
    raise TimeoutError(f"sweep {sweep_id} not finished after {timeout:.0f} s")


def bench_sweep(client: httpx.Client, iterations: int, repeats: int) -> None:
    body = sweep_body(iterations)
    start = time.perf_counter()
    first = client.post("/v1/sweeps", json=body)
    assert first.status_code == 201, first.text
    done = wait_sweep(client, first.json()["id"], timeout=3600)
    trained = time.perf_counter() - start
    ids = first.json()["job_ids"]

    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        again = client.post("/v1/sweeps", json=body, headers={"Reuse": "succeeded"})
        times.append(time.perf_counter() - start)
        answer = again.json()
        assert again.status_code == 201 and answer["status"] == "succeeded" and answer["packs"] == [], again.text
    start = time.perf_counter()
    rows = client.get(f"/v1/sweeps/{answer['id']}/results").json()["items"]
    read = time.perf_counter() - start
    hits = sum(r["reused_from"] == i for r, i in zip(rows, ids, strict=True))
    print(f"sweep of 49 configs ({done['status']}, {done['counts'].get('succeeded', 0)}/49 succeeded), "
          f"{iterations} iterations each")
    print(f"train the sweep (submit, wait):      {trained:8.2f} s")
    print(f"resubmit it with Reuse: succeeded:   {times[0]:8.3f} s first, median {statistics.median(times):.3f} s, "
          f"max {max(times):.3f} s of {repeats} ({hits}/49 reused_from the trained configs, 0 packs queued)")
    print(f"GET its results (49 rows):           {read:8.3f} s")
    print(f"ratio train / reuse (median):        {trained / statistics.median(times):8.0f}x")


def wait_all(client: httpx.Client, ids: list[str], timeout: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    status: dict[str, str] = {}
    while time.monotonic() < deadline:
        status = {i: client.get(f"/v1/jobs/{i}").json()["status"] for i in ids}
        if all(s in ("succeeded", "failed", "cancelled") for s in status.values()):
            return status
        time.sleep(0.5)
    raise TimeoutError(f"jobs not finished after {timeout:.0f} s: {status}")


def bench_jobs(client: httpx.Client, specs: list[dict[str, Any]], iterations: int, clients: int) -> None:
    start = time.perf_counter()
    first = submit_all(client, specs, {}, clients)
    assert all(r.status_code == 201 for r, _ in first), [r.text for r, _ in first if r.status_code != 201]
    ids = [r.json()["id"] for r, _ in first]
    status = wait_all(client, ids, timeout=3600)
    trained = time.perf_counter() - start
    failed = [i for i, s in status.items() if s != "succeeded"]

    start = time.perf_counter()
    again = submit_all(client, specs, {"Reuse": "succeeded"}, clients)
    reused = time.perf_counter() - start
    hits = sum(r.status_code == 200 and r.headers.get("Reused") == "true" and r.json()["id"] == i
               for (r, _), i in zip(again, ids, strict=True))
    latency = statistics.median(t for _, t in again) * 1000
    print(f"49 configs as 49 jobs, {iterations} iterations each, {clients} submitting connection(s)")
    print(f"train (submit 49, wait for all):     {trained:8.2f} s   ({len(failed)} did not succeed)")
    print(f"resubmit 49 with Reuse: succeeded:   {reused:8.3f} s   ({hits}/49 reused, median request "
          f"{latency:.1f} ms)")
    print(f"ratio train / reuse:                 {trained / reused:8.0f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--clients", type=int, default=1, help="concurrent submitting connections")
    parser.add_argument("--only", choices=["jobs", "sweep"], default=None, help="run one half (default: both)")
    parser.add_argument("--repeats", type=int, default=5, help="sweep resubmissions with reuse")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="narrownet-bench-reuse-"))
    cluster = Cluster(home, f"sqlite:///{home / 'narrownet.db'}", f"sqla+sqlite:///{home / 'broker.db'}",
                      settings={"NARROWNET_WORKER_TORCH_THREADS": "1", "NARROWNET_RUN_MIGRATIONS_ON_START": "false"})
    upgrade(cluster.database_url)
    key = create_key(cluster)
    specs = grid_specs(args.iterations)
    try:
        cluster.start_api()
        cluster.start_worker()
        cluster.wait_api()
        cluster.wait_worker()
        with httpx.Client(base_url=cluster.url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
            if args.only != "sweep":
                bench_jobs(client, specs, args.iterations, args.clients)
            if args.only != "jobs":
                bench_sweep(client, args.iterations, args.repeats)
    finally:
        cluster.stop()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
