"""Random-label CIFAR-10 memorization (the paper's appendix H.6, Table 3): can a 1-hidden-layer net narrower than
n = 50,000 fit shuffled labels? One command for every run.

    python bench/reproduce_random_labels.py --data-dir DIR            # every run here, in this process (CUDA if any)
    python bench/reproduce_random_labels.py --url URL --device cuda   # every run as a job of a running service
    python bench/reproduce_random_labels.py --smoke --data-dir DIR    # 2 tiny widths, 2 epochs, 120 images (tests)
    python bench/reproduce_random_labels.py --estimate                # expected GPU time of the full runs

Paper (appendix H.6): 1 hidden layer of width 1024, 2048, 4096 (< n = 50,000), ReLU and tanh, the constrained
regime (mirrored init, pairwise outer layer; its r, zeta, gamma were lost from our copy), initial learning rate 0.1,
step schedule x0.1 at epochs 150, 225 and 450, 1000 epochs, training labels shuffled once; Table 3 reports train
accuracy 0.9931 / 0.9984 / 0.9998 (ReLU) and 0.9872 / 0.9927 / 0.9938 (tanh), test ~0.10.
Ours where the text is silent (fixed before any run): SGD with momentum 0.9 (the paper's other experiments), no
weight decay, batch 128, cross-entropy (the paper's loss for every data set but the synthetic one), r = inf and V off,
inputs standardized per channel with training statistics (the paper: global mean and std), the regular regime run
beside it as a control. Final-epoch accuracies are reported; the per-epoch series are in the JSON.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import gpu_estimate  # noqa: E402
from bench.runs import (  # noqa: E402
    Planned,
    RunResult,
    add_arguments,
    estimate_device,
    exit_code,
    run_and_record,
    seeds_of,
    write_estimate,
)
from trainer.spec import JobSpec  # noqa: E402

PAPER_TRAIN_ACCURACY = {(1024, "relu"): 0.9931, (2048, "relu"): 0.9984, (4096, "relu"): 0.9998,
                        (1024, "tanh"): 0.9872, (2048, "tanh"): 0.9927, (4096, "tanh"): 0.9938}
CIFAR10 = {"n_train": 50_000, "n_test": 10_000, "input_shape": (3, 32, 32), "classes": 10}


@dataclass(frozen=True)
class Setting:
    widths: tuple[int, ...]
    activations: tuple[str, ...]
    regimes: tuple[str, ...]
    epochs: int
    milestone_epochs: tuple[int, ...]  # the learning rate is multiplied by 0.1 at these epochs
    batch_size: int
    lr: float
    seeds: tuple[int, ...] = (0,)
    limit: int | None = None  # images of CIFAR-10 used, train + test (None: all 60,000)
    device: str = "auto"
    checkpoint_epochs: int | None = 50  # a job killed mid-run resumes from here


FULL = Setting(widths=(1024, 2048, 4096), activations=("relu", "tanh"), regimes=("constrained", "regular"),
               epochs=1000, milestone_epochs=(150, 225, 450), batch_size=128, lr=0.1)
SMOKE = replace(FULL, widths=(16, 32), epochs=2, milestone_epochs=(1,), batch_size=16, limit=120, device="cpu",
                checkpoint_epochs=None)


def n_train(s: Setting) -> int:
    if s.limit is None:
        return CIFAR10["n_train"]
    return max(round(s.limit * CIFAR10["n_train"] / (CIFAR10["n_train"] + CIFAR10["n_test"])), 1)


def steps_per_epoch(s: Setting) -> int:
    return math.ceil(n_train(s) / s.batch_size)


def job_spec(s: Setting, regime: str, activation: str, width: int, seed: int) -> JobSpec:
    checkpoint = s.checkpoint_epochs * steps_per_epoch(s) if s.checkpoint_epochs else None
    return JobSpec.model_validate({
        "name": f"randlabels-{regime}-{activation}-m{width}-s{seed}", "regime": regime,
        "model": {"arch": "shallow", "width": width, "activation": activation},
        "data": {"source": "cifar10", "random_labels": True, "seed": 0, "limit": s.limit},
        "loss": "cross_entropy",
        "optim": {"name": "sgd", "lr": s.lr, "momentum": 0.9, "weight_decay": 0.0, "batch_size": s.batch_size,
                  "epochs": s.epochs, "schedule": "step", "milestones": [e / s.epochs for e in s.milestone_epochs],
                  "step_gamma": 0.1},
        "constraint": {"radius": None}, "metrics_every": 10**7, "checkpoint_every": checkpoint, "seed": seed,
        "device": s.device,
    })


def plan(s: Setting) -> list[Planned]:
    return [(job_spec(s, regime, act, width, seed), {"width": width, "activation": act, "regime": regime,
                                                     "seed": seed})
            for width in s.widths for act in s.activations for regime in s.regimes for seed in s.seeds]


def table(s: Setting, results: list[RunResult]) -> list[str]:
    lines = ["| width | activation | paper (constrained), train acc | "
             + " | ".join(f"{g} train acc | {g} test acc" for g in s.regimes) + " |",
             "|---|---|---|" + "---|---|" * len(s.regimes)]
    for width in s.widths:
        for act in s.activations:
            paper = PAPER_TRAIN_ACCURACY.get((width, act))
            cells = []
            for regime in s.regimes:
                mine = [r for r in results if (r.tags["width"], r.tags["activation"], r.tags["regime"])
                        == (width, act, regime)]
                cells += [acc(mine, "train_accuracy"), acc(mine, "test_accuracy")]
            ref = "-" if paper is None else f"{paper:.4f}"
            lines.append(f"| {width} | {act} | {ref} | " + " | ".join(cells) + " |")
    return lines


def acc(runs: list[RunResult], metric: str) -> str:
    values = [r.final[metric] for r in runs if r.status == "succeeded" and metric in r.final]
    failed = [r.status for r in runs if r.status != "succeeded"]
    text = ", ".join(f"{v:.4f}" for v in values) or "-"
    return text + (f" ({', '.join(failed)})" if failed else "")


def plot(s: Setting, results: list[RunResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(s.activations), figsize=(5.5 * len(s.activations), 4), squeeze=False)
    markers = "os^D"
    for ax, act in zip(axes[0], s.activations, strict=True):
        for i, width in enumerate(s.widths):
            for regime in s.regimes:
                for r in results:
                    if (r.tags["width"], r.tags["activation"], r.tags["regime"]) != (width, act, regime):
                        continue
                    points = [(h["epoch"], h["train_accuracy"]) for h in r.history if "epoch" in h]
                    if points:
                        ax.plot(*zip(*points, strict=True), marker=markers[i % len(markers)], markevery=0.1,
                                mfc="none", linestyle="-" if regime == "constrained" else "--",
                                label=f"{regime} m={width}")
            paper = PAPER_TRAIN_ACCURACY.get((width, act))
            if paper is not None:
                ax.axhline(paper, color="gray", linewidth=0.6, linestyle=":")
        ax.set(xlabel="epoch", ylabel="train accuracy (random labels)", title=f"{act} (dotted: the paper's Table 3)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def estimate(s: Setting, device: torch.device) -> dict:
    """One step per (width, activation), measured on `device`; the GPU time of every full run from it."""
    rows = []
    assumption = None if device.type == "cuda" else gpu_estimate.ASSUMPTIONS["shallow"]
    for width in s.widths:
        for act in s.activations:
            for regime in s.regimes:
                spec = job_spec(replace(s, device=device.type), regime, act, width, 0)
                tp = gpu_estimate.measure(spec, CIFAR10["input_shape"], CIFAR10["classes"], device, timed_steps=3)
                n_eval = s.limit or CIFAR10["n_train"] + CIFAR10["n_test"]  # train and test sets, every epoch
                times = gpu_estimate.run_seconds(tp, steps_per_epoch(s), s.epochs, n_eval, assumption)
                rows.append({"width": width, "activation": act, "regime": regime, **gpu_estimate.as_dict(tp), **times})
    key = "measured_device_seconds" if assumption is None else "assumed_gpu_seconds"
    return {"assumption": asdict(assumption) if assumption else None, "rows": rows,
            "total_gpu_hours": sum(r[key] for r in rows) * len(s.seeds) / 3600}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser, "random_labels")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    s = SMOKE if args.smoke else FULL
    s = replace(s, seeds=seeds_of(args), device=args.device or s.device)
    command = "python bench/reproduce_random_labels.py " + " ".join(argv if argv is not None else sys.argv[1:])
    args.out.mkdir(parents=True, exist_ok=True)
    if args.estimate:
        write_estimate(args, command, s, estimate(s, estimate_device(args)), "random_labels.estimate", lambda r: (
            f"  m={r['width']} {r['activation']} {r['regime']}: step {r['step_seconds'] * 1e3:.1f} ms on "
            f"{r['device']} ({r['measured_tflops'] * 1e3:.1f} GFLOP/s); full run "
            f"{r['measured_device_seconds'] / 3600:.1f} h here, "
            f"{r.get('assumed_gpu_seconds', r['measured_device_seconds']) / 60:.1f} min on the GPU"))
        return
    name = args.name or ("random_labels.smoke" if args.smoke else "random_labels")
    results, report = run_and_record(plan(s), args, command, s, name)
    wall = report["wall_seconds"]
    md = [f"# Random-label CIFAR-10 memorization ({name})", "", f"`{report['command']}`: {wall / 60:.1f} min, "
          f"{'jobs at ' + args.url if args.url else 'in-process'}. 1 hidden layer, SGD lr {s.lr} momentum 0.9, no "
          f"weight decay, batch {s.batch_size}, x0.1 at epochs {list(s.milestone_epochs)}, {s.epochs} epochs, "
          f"r = inf, seeds {list(s.seeds)}" + (f", {s.limit} images" if s.limit else "") + ". Final epoch.", "",
          *table(s, results), ""]
    (args.out / f"{name}.md").write_text("\n".join(md))
    plot(s, results, args.out / f"{name}.png")
    print("\n".join(md))
    sys.exit(exit_code(results))


if __name__ == "__main__":
    main()
