"""CIFAR-10 on ResNet-18 with a narrow 4th block, both regimes (the paper's Figure 8, appendix H.2/H.4). One command
for every run.

    python bench/reproduce_cifar.py --data-dir DIR               # every run here, in this process (CUDA if any)
    python bench/reproduce_cifar.py --url URL                    # every run as a job of a running service (gpu queue)
    python bench/reproduce_cifar.py --smoke --data-dir DIR       # 2 widths, 1 epoch, 120 images (the tests)
    python bench/reproduce_cifar.py --estimate                   # expected GPU time of the full runs

Paper (appendix H.2): ResNet-18, the 4th block's channels varied from 512 down; SGD lr 0.1, momentum 0.9, weight decay
5e-4, cosine schedule, 600 epochs, batch 128; pad-4 random crop and horizontal flip; in the constrained regime the
mirrored init, the pairwise output layer and the ball on the whole 4th block (BatchNorm and shortcut included). H.4:
"our training regime and regular training regime have similar performance", regular training does not fail when the
4th block is narrowed (on CIFAR; it does on R-ImageNet).
Here: block4_width in {8, 16, 32, 64, 128, 512}; cells regular r = inf, constrained r = inf and constrained with
r = 0.5 ||theta_0|| of block 4 (the paper's radii were lost from our copy; half the block's initial norm is our choice,
fixed before any run); init seed 0 (--seeds); bf16 autocast on CUDA (the paper does not say; --precision fp32);
inputs standardized per channel with training statistics. Final-epoch accuracies (no early stopping); per-epoch
series in the JSON.
"""

from __future__ import annotations

import argparse
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
from trainer.deep import build_model  # noqa: E402
from trainer.deep.models import named_block_parameters  # noqa: E402
from trainer.spec import JobSpec  # noqa: E402
from trainer.steps import steps_per_epoch as batches_per_epoch  # noqa: E402

CIFAR10 = {"n_train": 50_000, "n_test": 10_000, "input_shape": (3, 32, 32), "classes": 10}
Cell = tuple[str, float | None]  # (regime, radius as a fraction of ||theta_0|| of block 4; None = inf)


@dataclass(frozen=True)
class Setting:
    widths: tuple[int, ...]
    cells: tuple[Cell, ...]
    epochs: int
    batch_size: int
    lr: float = 0.1
    weight_decay: float = 5e-4
    seeds: tuple[int, ...] = (0,)
    limit: int | None = None  # images of CIFAR-10 used, train + test (None: all 60,000)
    device: str = "auto"
    precision: str = "bf16"
    checkpoint_epochs: int | None = 10  # a job killed mid-run resumes from here


FULL = Setting(widths=(8, 16, 32, 64, 128, 512), cells=(("regular", None), ("constrained", None), ("constrained", 0.5)),
               epochs=600, batch_size=128)
SMOKE = replace(FULL, widths=(8, 16), epochs=1, batch_size=16, limit=120, device="cpu", precision="fp32",
                checkpoint_epochs=None)


def n_train(s: Setting) -> int:
    if s.limit is None:
        return CIFAR10["n_train"]
    return max(round(s.limit * CIFAR10["n_train"] / (CIFAR10["n_train"] + CIFAR10["n_test"])), 1)


def steps_per_epoch(s: Setting) -> int:
    return batches_per_epoch(n_train(s), s.batch_size, drop_single=True)  # BatchNorm: a batch of 1 is dropped


def cell_label(cell: Cell) -> str:
    regime, fraction = cell
    return f"{regime}, r={'inf' if fraction is None else f'{fraction:g}‖θ0‖'}"


def _spec(s: Setting, regime: str, width: int, seed: int, radius: float | None) -> JobSpec:
    checkpoint = s.checkpoint_epochs * steps_per_epoch(s) if s.checkpoint_epochs else None
    return JobSpec.model_validate({
        "name": f"cifar10-{regime}-w{width}-s{seed}" + ("" if radius is None else f"-r{radius:.3g}"),
        "regime": regime, "model": {"arch": "resnet18", "block4_width": width},
        "data": {"source": "cifar10", "augment": True, "seed": 0, "limit": s.limit}, "loss": "cross_entropy",
        "optim": {"name": "sgd", "lr": s.lr, "momentum": 0.9, "weight_decay": s.weight_decay,
                  "batch_size": s.batch_size, "epochs": s.epochs, "schedule": "cosine"},
        "constraint": {"radius": radius}, "metrics_every": 10**7, "checkpoint_every": checkpoint, "seed": seed,
        "device": s.device, "precision": s.precision,
    })


def block4_norm(spec: JobSpec) -> tuple[float, int]:
    """||theta_0|| of block 4 (every parameter of it as one vector) and its parameter count, for this init."""
    model = build_model(spec, CIFAR10["input_shape"], CIFAR10["classes"])
    params = [p for _, p in named_block_parameters(model, model.projected_block())]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.detach()) for p in params]))
    return float(norm), sum(p.numel() for p in params)


def job_spec(s: Setting, cell: Cell, width: int, seed: int) -> tuple[JobSpec, dict]:
    regime, fraction = cell
    free = _spec(s, regime, width, seed, None)
    norm, count = block4_norm(free)
    radius = None if fraction is None else fraction * norm
    return _spec(s, regime, width, seed, radius), {"block4_init_norm": norm, "block4_params": count,
                                                   "radius": radius}


def plan(s: Setting) -> list[Planned]:
    planned = []
    for width in s.widths:
        for cell in s.cells:
            for seed in s.seeds:
                spec, info = job_spec(s, cell, width, seed)
                planned.append((spec, {"width": width, "cell": cell_label(cell), "seed": seed, **info}))
    return planned


def table(s: Setting, results: list[RunResult], metric: str) -> list[str]:
    labels = [cell_label(c) for c in s.cells]
    lines = ["| block4_width | block-4 params | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(labels)]
    for width in s.widths:
        row, params = [], "-"
        for label in labels:
            mine = [r for r in results if (r.tags["width"], r.tags["cell"]) == (width, label)]
            params = f"{mine[0].tags['block4_params']:,}" if mine else params
            values = [f"{r.final[metric]:.4f}" if r.status == "succeeded" else r.status for r in mine]
            row.append(", ".join(values) or "-")
        lines.append(f"| {width} | {params} | " + " | ".join(row) + " |")
    return lines


def plot(s: Setting, results: list[RunResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    labels = [cell_label(c) for c in s.cells]
    for metric, ax in zip(("test_accuracy", "train_accuracy"), axes, strict=True):
        for i, label in enumerate(labels):
            shift = 2 ** (0.06 * (i - (len(labels) - 1) / 2))  # side by side: equal values stay visible
            xs, ys = [], []
            for r in results:
                if r.tags["cell"] == label and r.status == "succeeded":
                    xs.append(r.tags["width"] * shift)
                    ys.append(r.final[metric])
            ax.plot(xs, ys, "os^D"[i % 4], mfc="none", linestyle="--" if label.startswith("regular") else "-",
                    label=label)
        ax.set_xscale("log", base=2)
        ax.set_xticks(s.widths, [str(w) for w in s.widths])
        ax.set(xlabel="block4_width (channels of ResNet-18's 4th block)", ylabel=f"final {metric.replace('_', ' ')}")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"CIFAR-10, ResNet-18, SGD cosine, {s.epochs} epochs, batch {s.batch_size}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def estimate(s: Setting, device: torch.device) -> dict:
    """One training step per (width, cell) measured on `device`; the GPU time of every full run from it."""
    assumption = None if device.type == "cuda" else gpu_estimate.ASSUMPTIONS["resnet18"]
    rows = []
    for width in s.widths:
        for cell in s.cells:
            spec, info = job_spec(replace(s, device=device.type), cell, width, 0)
            tp = gpu_estimate.measure(spec, CIFAR10["input_shape"], CIFAR10["classes"], device, timed_steps=2)
            n_eval = s.limit or CIFAR10["n_train"] + CIFAR10["n_test"]  # train and test sets, every epoch
            times = gpu_estimate.run_seconds(tp, steps_per_epoch(s), s.epochs, n_eval, assumption)
            rows.append({"width": width, "cell": cell_label(cell), **info, **gpu_estimate.as_dict(tp), **times})
    key = "measured_device_seconds" if assumption is None else "assumed_gpu_seconds"
    return {"assumption": asdict(assumption) if assumption else None, "rows": rows,
            "total_gpu_hours": sum(r[key] for r in rows) * len(s.seeds) / 3600}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser, "cifar")
    parser.add_argument("--precision", choices=["bf16", "fp32"], default=None, help="autocast on CUDA (default bf16)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    s = SMOKE if args.smoke else FULL
    s = replace(s, seeds=seeds_of(args), device=args.device or s.device, precision=args.precision or s.precision)
    command = "python bench/reproduce_cifar.py " + " ".join(argv if argv is not None else sys.argv[1:])
    args.out.mkdir(parents=True, exist_ok=True)
    if args.estimate:
        write_estimate(args, command, s, estimate(s, estimate_device(args)), "cifar.estimate", lambda r: (
            f"  w={r['width']} {r['cell']}: {r['step_flops'] / 1e9:.1f} GFLOP per step, "
            f"{r['step_seconds']:.2f} s per step on {r['device']} ({r['measured_tflops'] * 1e3:.1f} GFLOP/s); "
            f"full run {r['measured_device_seconds'] / 86400:.1f} days here, "
            f"{r.get('assumed_gpu_seconds', r['measured_device_seconds']) / 3600:.2f} h on the GPU"))
        return
    name = args.name or ("cifar.smoke" if args.smoke else "cifar")
    results, report = run_and_record(plan(s), args, command, s, name)
    wall = report["wall_seconds"]
    md = [f"# CIFAR-10, ResNet-18 with a narrow 4th block ({name})", "",
          f"`{report['command']}`: {wall / 60:.1f} min, {'jobs at ' + args.url if args.url else 'in-process'}. "
          f"SGD lr {s.lr} momentum 0.9 wd {s.weight_decay}, cosine, batch {s.batch_size}, {s.epochs} epochs, "
          f"augmentation on, {s.precision} on CUDA, seeds {list(s.seeds)}"
          + (f", {s.limit} images" if s.limit else "") + ". Final epoch.", "",
          "## Test accuracy", "", *table(s, results, "test_accuracy"), "",
          "## Train accuracy", "", *table(s, results, "train_accuracy"), ""]
    (args.out / f"{name}.md").write_text("\n".join(md))
    plot(s, results, args.out / f"{name}.png")
    print("\n".join(md))
    sys.exit(exit_code(results))


if __name__ == "__main__":
    main()
