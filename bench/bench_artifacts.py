"""What the S3 artifact store costs against the local directory: checkpoint upload and download throughput, and
the wall time it adds to a small job.

Both backends run in this process against the same files, interleaved over rounds (best of each reported, as
noise on a shared machine only adds time): the local store in a temp directory (an upload is a link into it, a
download a verified copy out of it) and moto's S3 server on loopback (narrownet/s3server.py; reached directly,
without the relay the tests cut):

    .venv/bin/python bench/bench_artifacts.py [--rounds 3] [--jobs 5]

Upload = what a worker does per checkpoint (put weights and metadata); download = fetch_verified (what a resume on
another host does: stream to a file while hashing, fsync, rename) and the API's open_verified (hash, then stream
the same version again). The job figure runs run_job in-process on SQLite for a small job (2 checkpoints) with
each store and reports the median wall time per job and the difference.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from core.artifacts.local import LocalStore
from core.artifacts.s3 import S3Store, make_client
from core.artifacts.store import ArtifactStore
from core.artifacts.verified import fetch_verified, open_verified
from narrownet.s3server import S3Server

MiB = 1 << 20
SIZES = {"1 MiB (a shallow net)": 1 * MiB, "45 MiB (ResNet-18)": 45 * MiB}


def best(rounds: int, run: Callable[[], None]) -> float:
    fastest = math.inf
    for _ in range(rounds):
        start = time.perf_counter()
        run()
        fastest = min(fastest, time.perf_counter() - start)
    return fastest


OPERATIONS = ["upload (put_file)", "download to disk, verified (fetch_verified)",
              "API download, verified (open_verified)"]


def _operation(operation: str, store: ArtifactStore, key: str, source: Path, sha256: str,
               tmp: Path) -> Callable[[], None]:
    if operation == OPERATIONS[0]:
        return lambda: store.put_file(key, source)
    if operation == OPERATIONS[1]:
        return lambda: None if fetch_verified(store, key, tmp / "fetched" / source.name, sha256) else None
    return lambda: _drain(open_verified(store, key, sha256))


def throughput(stores: dict[str, ArtifactStore], tmp: Path, rounds: int) -> None:
    print("| checkpoint | operation | local (MiB/s) | S3 (MiB/s) | S3 time / local time |")
    print("|---|---|---:|---:|---:|")
    for label, size in SIZES.items():
        source = tmp / f"ckpt-{size}.safetensors"
        source.write_bytes(os.urandom(size))
        sha256 = hashlib.sha256(source.read_bytes()).hexdigest()
        key = f"jobs/bench/attempt-1/ckpt-{size:09d}.safetensors"
        for operation in OPERATIONS:
            seconds = {}
            for name, store in stores.items():
                store.put_file(key, source)
                seconds[name] = best(rounds, _operation(operation, store, key, source, sha256, tmp))
            rates = {name: size / MiB / s for name, s in seconds.items()}
            print(f"| {label} | {operation} | {rates['local']:.0f} | {rates['s3']:.0f} | "
                  f"{seconds['s3'] / seconds['local']:.2f} |")


def _drain(reader: object) -> None:
    from core.artifacts.store import ArtifactReader

    assert isinstance(reader, ArtifactReader)
    with reader:
        for _ in reader.chunks():
            pass


def job_wall_time(stores: dict[str, ArtifactStore], tmp: Path, jobs: int) -> None:
    from sqlalchemy.orm import sessionmaker

    from core.db.migrate import upgrade
    from core.db.models import ApiKey, Job
    from core.db.session import make_engine
    from core.settings import Settings
    from worker.runner import run_job

    url = f"sqlite:///{tmp / 'bench.db'}"
    upgrade(url)
    sessions = sessionmaker(bind=make_engine(url), expire_on_commit=False)
    spec = {"name": "small", "regime": "constrained", "model": {"arch": "shallow", "width": 16},
            "data": {"source": "synthetic", "n": 64, "d": 8, "seed": 3}, "device": "cpu", "seed": 11,
            "optim": {"name": "gd", "lr": 0.05, "iterations": 400}, "metrics_every": 50, "checkpoint_every": 200}
    with sessions.begin() as s:
        owner = ApiKey(name="bench", key_hash=os.urandom(16).hex(), prefix="bench")
        s.add(owner)
        s.flush()
        owner_id = owner.id
    times: dict[str, list[float]] = {name: [] for name in stores}
    for i in range(jobs):
        for name, store in stores.items():  # interleaved, so drift on a shared machine hits both alike
            with sessions.begin() as s:
                job = Job(owner_id=owner_id, name="small", regime="constrained", spec=spec, queue="cpu")
                s.add(job)
                s.flush()
                job_id = job.id
            settings = Settings(home=tmp / f"home-{name}-{i}", database_url=url)
            start = time.perf_counter()
            assert run_job(job_id, worker_id="bench", settings=settings, sessions=sessions, artifacts=store)
            times[name].append(time.perf_counter() - start)
    local, s3 = statistics.median(times["local"]), statistics.median(times["s3"])
    print(f"\n| small job (400 steps, 2 checkpoints), median of {jobs} | local (s) | S3 (s) | added by S3 (s) | "
          "S3 / local |")
    print("|---|---:|---:|---:|---:|")
    print(f"| run_job, in-process | {local:.3f} | {s3:.3f} | {s3 - local:+.3f} | {s3 / local:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        server = S3Server(tmp)
        server.start()
        try:
            os.environ.update({**server.env(), "AWS_ENDPOINT_URL": f"http://{server.host}:{server.moto_port}"})
            server.create_bucket("narrownet-bench")
            stores: dict[str, ArtifactStore] = {
                "local": LocalStore(tmp / "artifacts"),
                "s3": S3Store(make_client(), "narrownet-bench", "artifacts"),
            }
            print(f"best of {args.rounds} rounds; S3 = moto's server on loopback\n")
            throughput(stores, tmp, args.rounds)
            job_wall_time(stores, tmp, args.jobs)
        finally:
            server.kill()


if __name__ == "__main__":
    main()
