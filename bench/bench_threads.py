"""How many CPU threads a single training run should use: 1, every core, or what `narrownet train` picks.

Runs the same training in-process with each thread count, interleaved over rounds (best of each reported, as
noise on a shared machine only adds time), for a small net (the README's example size) and a big one:

    .venv/bin/python bench/bench_threads.py [--rounds 3]

Prints seconds per run and the ratio of each to the 1-thread baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from pathlib import Path

import torch

from trainer.data import load_data
from trainer.loop import train
from trainer.spec import JobSpec
from trainer.threads import step_macs, threads_for

PROBLEMS = {
    "small (n=200, d=20, m=40, 2000 steps)": {
        "model": {"arch": "shallow", "width": 40}, "data": {"source": "synthetic", "n": 200, "d": 20},
        "optim": {"name": "gd", "momentum": 0.9, "lr": 0.2, "iterations": 2000}},
    "big (n=4000, d=200, m=800, 40 steps)": {
        "model": {"arch": "shallow", "width": 800}, "data": {"source": "synthetic", "n": 4000, "d": 200},
        "optim": {"name": "gd", "momentum": 0.9, "lr": 0.05, "iterations": 40}},
}


def seconds(spec: JobSpec, threads: int) -> float:
    torch.set_num_threads(threads)
    data = load_data(spec.data)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        train(spec, Path(out), data=data)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    print(f"{cores} cores; best of {args.rounds} interleaved rounds\n")
    print(f"| problem | MACs/step | auto picks | 1 thread (s) | {cores} threads (s) | auto (s) | "
          f"{cores} threads / 1 | auto / 1 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, body in PROBLEMS.items():
        spec = JobSpec.model_validate({"regime": "constrained", "metrics_every": 100, "device": "cpu", **body})
        data = load_data(spec.data)
        macs = step_macs(spec, data.n_train, math.prod(data.input_shape), data.output_dim)
        auto = threads_for(macs, cores)
        best = {1: math.inf, cores: math.inf, "auto": math.inf}
        for _ in range(args.rounds):
            best[1] = min(best[1], seconds(spec, 1))
            best[cores] = min(best[cores], seconds(spec, cores))
            best["auto"] = min(best["auto"], seconds(spec, auto))
        print(f"| {label} | {macs:.3g} | {auto} | {best[1]:.2f} | {best[cores]:.2f} | {best['auto']:.2f} | "
              f"{best[cores] / best[1]:.2f} | {best['auto'] / best[1]:.2f} |")


if __name__ == "__main__":
    main()
