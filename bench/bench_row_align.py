"""What the padded workspace rows cost (trainer/shallow/net.py ROW_ALIGN): steps/s with rows padded to 64
elements (a config bit for bit the same alone and in a pack) vs unpadded contiguous buffers, interleaved in one
process, one job and the 49-config pack of bench_sweeps.py (n=1000, d=20, m=100, constrained).

    .venv/bin/python bench/bench_row_align.py [--rounds 5] [--steps 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import trainer.shallow.net as net  # noqa: E402
from bench.bench_sweeps import sweep_file  # noqa: E402
from trainer.data import load_data  # noqa: E402
from trainer.grid import SweepFile, expand  # noqa: E402
from trainer.shallow.learner import ConfigGrid, ShallowLearner  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    specs = [c.spec for c in expand(SweepFile.model_validate(sweep_file(1000)))]
    data = load_data(specs[0].data)
    print("| configs | unpadded steps/s | padded steps/s | padded time / unpadded |\n|---:|---:|---:|---:|")
    for configs in (1, len(specs)):
        learners = {}
        for align in (1, net.ROW_ALIGN):
            previous, net.ROW_ALIGN = net.ROW_ALIGN, align  # buffers are allocated at the first step
            learner = ShallowLearner(specs[0], data, ConfigGrid.of(specs[:configs]), torch.device("cpu"))
            learner.step(0)
            net.ROW_ALIGN = previous
            learners[align] = learner
        best = dict.fromkeys(learners, float("inf"))
        for _ in range(args.rounds):  # interleaved; the best round of each (noise only adds time)
            for align, learner in learners.items():
                start = time.perf_counter()
                for step in range(1, args.steps + 1):
                    learner.step(step)
                best[align] = min(best[align], (time.perf_counter() - start) / args.steps)
        plain, padded = best[1], best[max(best)]
        print(f"| {configs} | {1 / plain:,.1f} | {1 / padded:,.1f} | {padded / plain:.3f} |")


if __name__ == "__main__":
    main()
