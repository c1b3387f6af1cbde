"""The constrained regime's overhead on ResNet-18: images/s of a training step (forward + backward + SGD step
+ projection of block 4 onto its ball) against the same model without the projection, in one process.

    python bench/bench_resnet.py [--widths 64,512] [--batch 16] [--rounds 5] [--steps 3] [--threads 1]

Every configuration runs through trainer.deep.DeepLearner.step (the code path jobs use) on random 32x32x3 images.
Configurations are timed in interleaved rounds and each reports its median, so a burst of load from other
processes on a shared machine hits all of them alike. Printed per block-4 width:
  constrained + projection   (mirrored, pairwise block 4, projected after every step: the paper's regime)
  constrained, r = inf       (the same model and init, no projection)     -> ratio = the projection's overhead
  regular, r = inf           (plain nn.Conv2d/BatchNorm2d block 4)        -> context: cost of the paired layers
and the projection alone (project_block_onto_ball_ over block 4's parameters).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.data import Dataset  # noqa: E402
from trainer.deep import DeepLearner  # noqa: E402
from trainer.deep.ball import project_block_onto_ball_  # noqa: E402
from trainer.spec import JobSpec  # noqa: E402

CONFIGS = (("constrained + projection", "constrained", 1.0), ("constrained, r = inf", "constrained", None),
           ("regular, r = inf", "regular", None))


def random_images(n: int, seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return Dataset(X_train=X, y_train=y, X_test=X[:0], y_test=y[:0], task="classification", num_classes=10,
                   x_mean=torch.zeros(3, 1, 1), x_std=torch.ones(3, 1, 1))


def make_learner(regime: str, radius: float | None, width: int, batch: int, data: Dataset,
                 device: torch.device, precision: str = "fp32") -> DeepLearner:
    spec = JobSpec.model_validate({
        "regime": regime, "model": {"arch": "resnet18", "block4_width": width}, "data": {"source": "cifar10"},
        "loss": "cross_entropy", "optim": {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4,
                                          "batch_size": batch, "iterations": 1_000_000},
        "constraint": {"radius": radius}, "seed": 0, "device": device.type, "precision": precision,
    })
    return DeepLearner(spec, data, device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--widths", default="64,512")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=3, help="steps per timed round")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: the CPU is shared)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    widths = [int(w) for w in args.widths.split(",")]
    data = random_images(args.batch * (args.steps + 1))
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, threads {args.threads}, "
          f"device {device}, batch {args.batch}, 32x32x3, {args.rounds} rounds x {args.steps} steps (median)")
    for width in widths:
        learners = {name: make_learner(regime, r, width, args.batch, data, device) for name, regime, r in CONFIGS}
        for learner in learners.values():  # warm-up: allocator, oneDNN primitive caches
            learner.step(0)
        times: dict[str, list[float]] = {name: [] for name in learners}
        step = 1
        for _ in range(args.rounds):
            for name, learner in learners.items():
                sync(device)
                t0 = time.perf_counter()
                for s in range(step, step + args.steps):
                    learner.step(s % learner.steps_per_epoch)
                sync(device)
                times[name].append((time.perf_counter() - t0) / args.steps)
            step += args.steps
        constrained = learners["constrained + projection"]
        proj_times = []
        for _ in range(20):
            sync(device)
            t0 = time.perf_counter()
            project_block_onto_ball_(constrained.block, constrained.block_init, 1.0)
            sync(device)
            proj_times.append(time.perf_counter() - t0)
        block_params = sum(p.numel() for p in constrained.block)
        total_params = sum(p.numel() for p in constrained.model.parameters())
        rate = {name: args.batch / statistics.median(ts) for name, ts in times.items()}
        print(f"\nblock4_width {width}: block 4 holds {block_params:,} of {total_params:,} parameters")
        for name in learners:
            ts = times[name]
            print(f"  {name:26s} {rate[name]:8.1f} images/s   step median {1e3 * statistics.median(ts):7.1f} ms"
                  f"  [min {1e3 * min(ts):.1f}, max {1e3 * max(ts):.1f}]")
        print(f"  projection alone: {1e3 * statistics.median(proj_times):.2f} ms median per call")
        print(f"  ratio constrained+projection / constrained r=inf: "
              f"{rate['constrained + projection'] / rate['constrained, r = inf']:.3f}")
        print(f"  ratio constrained+projection / regular r=inf:     "
              f"{rate['constrained + projection'] / rate['regular, r = inf']:.3f}")


if __name__ == "__main__":
    main()
