"""The paper's synthetic experiment (Figure 4 a-d), scaled to run in under 15 minutes on a 2-core CPU.

    python bench/reproduce_synthetic.py [--quick] [--out bench/results] [--threads N]
    python bench/reproduce_synthetic.py --quick --url http://127.0.0.1:8000 [--key KEY]   # on a running service
    python bench/reproduce_synthetic.py --name synthetic.long --widths 20,40 --radii 1,3 --lr-hidden 0.005,0.01,0.05 \
        --lr-outer 0.5 --seeds 0,1,2 --iterations 20000       # a follow-up on a few cells with a longer budget

Cells are widths x radii x regimes. In each cell every (lr_W, lr_v) pair of the grid is trained (full-batch GD,
momentum 0.9, square loss, tanh) and the cell reports the lowest FINAL training loss over the grid (Figure 4 a/b)
and the Jacobian's smallest singular value of that best config (Figure 4 c/d). All radii and learning rates of one
(width, regime) are a single vectorized program: the whole grid is one sweep file (widths x regimes x radii x
learning rates x seeds), trained here (trainer.sweep, pack by pack) or, with --url, submitted to a running service
as one sweep (POST /v1/sweeps), which trains the same packs; both give the same numbers. Writes NAME.json (every
config's final metrics,
the settings and seeds), NAME.md (tables) and NAME.png (heatmaps) into --out; NAME defaults to "synthetic".
With several seeds a cell's value is computed per seed, and the tables show the median [min, max] over seeds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.grid import SweepFile  # noqa: E402
from trainer.init import init_batch  # noqa: E402
from trainer.spec import JobSpec  # noqa: E402
from trainer.sweep import run_sweep  # noqa: E402

REGIMES = ("constrained", "regular")  # Figure 4 (a) and (b); regular with r < inf is the paper's ablation
PAPER_LRS = (1e-4, 1e-3, 5e-3, 1e-2, 5e-2, 1e-1, 5e-1)


@dataclass(frozen=True)
class Setting:
    n: int
    d: int
    widths: tuple[int, ...]
    radii: tuple[float | None, ...]  # None = r = inf (no projection)
    lr_hidden: tuple[float, ...]
    lr_outer: tuple[float, ...]
    iterations: int
    labels: str = "gaussian"
    data_seed: int = 0
    seeds: tuple[int, ...] = (0,)  # initialization seeds
    metrics_points: int = 10  # training-loss history points per run (to tell a stall from a slow descent)


# n = 200, d = 20: 2n/d = 20, so 20..160 are the paper's narrow widths (2n/d <= m < n); m = 10 lies below the
# theorem's range, as a control. Radii span ||W0||_F ~ sqrt(m) (4.5 at m = 20, 12.6 at m = 160). The two smallest
# paper learning rates are dropped: in 2,000 iterations they never ranked in the top 3 of any pilot cell, and the
# freed time goes into iterations (see bench/RESULTS.md).
FULL = Setting(n=200, d=20, widths=(10, 20, 40, 80, 160), radii=(1.0, 3.0, 10.0, None),
               lr_hidden=PAPER_LRS[2:], lr_outer=PAPER_LRS[2:], iterations=2000)
QUICK = Setting(n=40, d=8, widths=(10, 20), radii=(1.0, None), lr_hidden=(0.1, 0.5), lr_outer=(0.1, 0.5),
                iterations=50)


def base_spec(s: Setting, regime: str, width: int) -> JobSpec:
    return JobSpec.model_validate({
        "name": f"fig4-{regime}-m{width}", "regime": regime,
        "model": {"arch": "shallow", "width": width, "activation": "tanh"},
        "data": {"source": "synthetic", "n": s.n, "d": s.d, "seed": s.data_seed, "labels": s.labels},
        "loss": "square",
        "optim": {"name": "gd", "momentum": 0.9, "lr_hidden": s.lr_hidden[0], "lr_outer": s.lr_outer[0],
                  "iterations": s.iterations},
        "metrics_every": max(1, s.iterations // s.metrics_points), "seed": s.seeds[0], "device": "cpu",
    })


def finite_or_none(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None  # JSON has no inf/NaN


def loss_key(entry: dict) -> float:
    loss = entry["train_loss"]
    return loss if loss is not None else math.inf  # a diverged config never wins a cell


FINAL_METRICS = ("train_loss", "w_dist", "v_min", "v_ratio", "jacobian_sigma_min")


def sweep_file(s: Setting, name: str) -> dict:
    """The whole grid as one sweep file: packs of one (width, regime) each train as one vectorized program."""
    base = base_spec(s, REGIMES[0], s.widths[0]).model_dump(mode="json", exclude_unset=True)
    return {"name": name, "base": base, "objective": {"metric": "train_loss", "mode": "min"},
            "grid": {"model.width": list(s.widths), "regime": list(REGIMES), "constraint.radius": list(s.radii),
                     "optim.lr_hidden": list(s.lr_hidden), "optim.lr_outer": list(s.lr_outer), "seed": list(s.seeds)}}


def entry(s: Setting, params: dict, final: dict | None, history: list[dict]) -> dict:
    width, regime, seed = params["model.width"], params["regime"], params["seed"]
    final = final or {}
    return {"width": width, "regime": regime, "radius": params["constraint.radius"],
            "lr_hidden": params["optim.lr_hidden"], "lr_outer": params["optim.lr_outer"], "seed": seed,
            **{k: finite_or_none(final.get(k)) for k in FINAL_METRICS},
            "w0_norm": init_norm(regime, width, s.d, seed),
            "loss_history": [[h["step"], finite_or_none(h.get("train_loss"))] for h in history]}


def run(s: Setting) -> tuple[list[dict], dict[str, float]]:
    """Train the grid here, pack by pack; return one entry per (cell, config) and each pack's wall time."""
    result = run_sweep(SweepFile.model_validate(sweep_file(s, "synthetic")),
                       on_pack=lambda done, total: print(f"  {done}/{total} configs", flush=True))
    walls = {}
    for pack in result.packs:
        first = result.configs[pack.configs[0]].params
        walls[f"{first['regime']}/m={first['model.width']}"] = pack.seconds
        print(f"  m={first['model.width']:<4} {first['regime']:<12} {len(pack.configs)} configs x {s.iterations} "
              f"it: {pack.seconds:6.1f} s", flush=True)
    return [entry(s, r.params, r.final_metrics, r.history) for r in result.results], walls


def run_on_service(s: Setting, url: str, key: str | None, name: str) -> tuple[list[dict], dict[str, float]]:
    """Submit the grid to a running service as one sweep, wait for it, read back every config's metrics."""
    from narrownet.client import NarrownetClient

    with NarrownetClient(url, key, timeout=60.0) as api:
        sweep = api.submit_sweep(sweep_file(s, name))
        print(f"  sweep {sweep['id']}: {sweep['n_configs']} configs in {len(sweep['packs'])} packs", flush=True)
        done = api.wait_sweep(sweep["id"], timeout=24 * 3600, poll_interval=0.5)
        print(f"  {done['status']}: {done['counts']}", flush=True)
        entries = []
        for row in api.sweep_results(sweep["id"])["items"]:
            points = api.metrics(row["job_id"])["points"]
            history = [{"step": p["step"], **p["values"]} for p in points]
            entries.append(entry(s, row["params"], row["final_metrics"], history))
    return entries, {}


def init_norm(regime: str, width: int, d: int, seed: int) -> float:
    """||W0||_F of the initialization a config with this seed starts from."""
    W, _ = init_batch(regime, width, d, 1, [seed])
    return float(torch.linalg.vector_norm(W))


Cell = tuple[int, str, float | None]  # (width, regime, radius)


def best_per_cell(entries: list[dict]) -> dict[Cell, list[dict]]:
    """Per cell, per seed (in seed order): the config with the lowest final training loss over the lr grid."""
    best: dict[tuple[Cell, int], dict] = {}
    for e in entries:
        key = ((e["width"], e["regime"], e["radius"]), e["seed"])
        if key not in best or loss_key(e) < loss_key(best[key]):
            best[key] = e
    cells: dict[Cell, list[dict]] = {}
    for (cell, _), e in sorted(best.items(), key=lambda item: item[0][1]):
        cells.setdefault(cell, []).append(e)
    return cells


def median(values: list[float | None]) -> float | None:
    """Median with diverged runs (None) counted as +inf; None if the median itself diverged."""
    ordered = sorted(math.inf if v is None else v for v in values)
    mid = ordered[(len(ordered) - 1) // 2] if len(ordered) % 2 else (ordered[len(ordered) // 2 - 1]
                                                                      + ordered[len(ordered) // 2]) / 2
    return finite_or_none(mid)


def loss_at_half(entry: dict) -> float | None:
    """Training loss at the recorded step nearest T/2: loss(T) / loss(T/2) near 1 means a stall."""
    hist = entry["loss_history"]
    half = hist[-1][0] / 2
    return min(hist, key=lambda h: abs(h[0] - half))[1]


def fmt(x: float | None, spec: str = ".2e") -> str:
    return "diverged" if x is None else format(x, spec)


def radius_label(r: float | None) -> str:
    return "inf" if r is None else f"{r:g}"


def summary(runs: list[dict], metric: str) -> str:
    """One seed: its value; several: median [min, max] over seeds."""
    values = [e.get(metric) for e in runs]
    if len(values) == 1:
        return fmt(values[0])
    finite = [v for v in values if v is not None]
    spread = f" [{fmt(min(finite), '.1e')}, {fmt(max(finite), '.1e')}]" if finite else ""
    return fmt(median(values), ".1e") + spread


def tables(s: Setting, cells: dict[Cell, list[dict]]) -> str:
    cols = [(g, r) for g in REGIMES for r in s.radii]
    head = "| m | m d / n | " + " | ".join(f"{g} r={radius_label(r)}" for g, r in cols) + " |"
    rule = "|---|---|" + "---|" * len(cols)

    def matrix(metric: str) -> list[str]:
        rows = [head, rule]
        for m in s.widths:
            below = " (< 2n/d)" if m < 2 * s.n / s.d else ""
            values = [summary(cells[(m, g, r)], metric) for g, r in cols]
            rows.append(f"| {m}{below} | {m * s.d / s.n:g} | " + " | ".join(values) + " |")
        return rows

    detail = ["| m | regime | r | seed | best final loss | lr_W | lr_v | loss(T)/loss(T/2) | ‖W-W0‖_F | ‖W0‖_F "
              "| sigma_min(J) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in s.widths:
        for g, r in cols:
            for e in cells[(m, g, r)]:
                half, final = loss_at_half(e), e["train_loss"]
                ratio = final / half if final is not None and half else None
                detail.append(f"| {m} | {g} | {radius_label(r)} | {e['seed']} | {fmt(final)} | {e['lr_hidden']:g} "
                              f"| {e['lr_outer']:g} | {fmt(ratio, '.2g')} | {fmt(e['w_dist'], '.2f')} "
                              f"| {e['w0_norm']:.2f} | {fmt(e.get('jacobian_sigma_min'), '.3g')} |")
    seeds = f", median [min, max] over init seeds {list(s.seeds)}" if len(s.seeds) > 1 else ""
    return "\n".join([
        f"### Best final training loss over the learning-rate grid (Figure 4 a/b){seeds}", "",
        *matrix("train_loss"), "",
        f"### Smallest singular value of the Jacobian dF/dW at the end, best config of each cell (Figure 4 c/d){seeds}",
        "", *matrix("jacobian_sigma_min"), "",
        "### Best config per cell (loss(T)/loss(T/2) near 1: the loss has stalled; far below 1: still descending)",
        "", *detail, "",
    ])


def markdown(s: Setting, cells: dict[Cell, list[dict]], walls: dict, total: float, command: str) -> str:
    grid = len(s.lr_hidden) * len(s.lr_outer)
    return "\n".join([
        "# Synthetic experiment (the paper's Figure 4), reproduced at CPU scale", "",
        f"Command: `{command}`  ", f"Training wall time: {total:.0f} s ({platform.machine()}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)).", "",
        f"Data: n = {s.n}, d = {s.d} (2n/d = {2 * s.n / s.d:g}), x ~ N(0, I) normalized to unit norm, "
        f"{s.labels} labels, data seed {s.data_seed}. Net: 1 hidden layer, tanh, loss 1/(2n) sum (f - y)^2. "
        f"GD, momentum 0.9, {s.iterations} iterations (the paper: 200,000), init seeds {list(s.seeds)}. "
        f"Grid: lr_W in {list(s.lr_hidden)}, lr_v in {list(s.lr_outer)} ({grid} pairs; the paper: 7 x 7 of "
        f"{list(PAPER_LRS)}). Constrained = mirrored LeCun init + pairwise (v, -v) + W projected on the ball "
        "||W - W0||_F <= r (zeta, gamma unset: v free). Regular = LeCun init, free outer layer; with finite r it is "
        "the paper's ablation (regular + ball). Each cell: the lowest FINAL training loss over the grid.", "",
        tables(s, cells),
        "Per-sweep wall times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in walls.items()), "",
    ])


def heatmaps(s: Setting, cells: dict[Cell, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    def grid(regime: str, metric: str) -> list[list[float]]:
        values = [[median([e.get(metric) for e in cells[(m, regime, r)]]) for r in s.radii] for m in s.widths]
        return [[math.nan if v is None else v for v in line] for line in values]

    fig, axes = plt.subplots(2, 2, figsize=(4 + 3.2 * len(s.radii), 3 + 1.8 * len(s.widths)))
    for row, (metric, title, cmap) in enumerate((("train_loss", "best final training loss", "viridis"),
                                                 ("jacobian_sigma_min", "sigma_min(J) at the end", "magma"))):
        values = [x for g in REGIMES for line in grid(g, metric) for x in line if x == x and x > 0]
        norm = LogNorm(vmin=max(min(values, default=1e-12), 1e-12), vmax=max(values, default=1.0))
        for col, regime in enumerate(REGIMES):
            ax = axes[row][col]
            data = grid(regime, metric)
            image = ax.imshow([[max(x, norm.vmin) for x in line] for line in data], norm=norm, cmap=cmap,
                              aspect="auto")
            for i, line in enumerate(data):
                for j, x in enumerate(line):
                    ax.text(j, i, "div." if x != x else f"{x:.1e}", ha="center", va="center", fontsize=7,
                            color="white" if x != x or norm(max(x, norm.vmin)) < 0.5 else "black")
            ax.set_xticks(range(len(s.radii)), [radius_label(r) for r in s.radii])
            ax.set_yticks(range(len(s.widths)), [str(m) for m in s.widths])
            ax.set_xlabel("radius r")
            ax.set_ylabel("width m")
            ax.set_title(f"{regime}: {title}", fontsize=9)
            fig.colorbar(image, ax=ax)
    seeds = f", median over {len(s.seeds)} seeds" if len(s.seeds) > 1 else ""
    fig.suptitle(f"n={s.n}, d={s.d}, {s.iterations} GD iterations, best of {len(s.lr_hidden) * len(s.lr_outer)} "
                 f"lr pairs{seeds}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(","))


def radii(text: str) -> tuple[float | None, ...]:
    return tuple(None if x.strip() == "inf" else float(x) for x in text.split(","))


def ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(","))


def write_json(path: Path, report: dict) -> None:
    """One entry per line: readable, and a re-run diffs line by line."""
    entries = report.pop("entries")
    lines = ",\n".join(json.dumps(e) for e in entries)
    path.write_text(json.dumps(report, indent=1)[:-2] + ',\n "entries": [\n' + lines + "\n ]\n}\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a tiny grid for a smoke test (seconds)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--name", default="synthetic", help="output file stem")
    # One thread: on a shared 2-core machine, two OpenMP threads competing with other processes ran ~10x slower.
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--url", default=None, help="submit the grid as one sweep to the service at this URL")
    parser.add_argument("--key", default=None, help="API key for --url [env NARROWNET_API_KEY]")
    overrides = {  # each replaces one field of the chosen setting
        "n": int, "d": int, "labels": str, "iterations": int, "widths": ints, "radii": radii, "lr_hidden": floats,
        "lr_outer": floats, "seeds": ints,
    }
    for field, parse in overrides.items():
        parser.add_argument("--" + field.replace("_", "-"), type=parse, default=None, help=f"override {field}")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    setting = QUICK if args.quick else FULL
    changes = {f: getattr(args, f) for f in overrides if getattr(args, f) is not None}
    setting = Setting(**{**asdict(setting), **changes})
    command = "python bench/reproduce_synthetic.py " + " ".join(argv if argv is not None else sys.argv[1:])

    start = time.perf_counter()
    if args.url:
        key = args.key or os.environ.get("NARROWNET_API_KEY")
        entries, walls = run_on_service(setting, args.url, key, args.name)
    else:
        entries, walls = run(setting)
    total = time.perf_counter() - start
    cells = best_per_cell(entries)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / f"{args.name}.json", {
        "command": command.strip(), "wall_seconds": total, "sweep_wall_seconds": walls, "torch": torch.__version__,
        "threads": torch.get_num_threads(), "setting": asdict(setting), "regimes": list(REGIMES),
        "trained_by": args.url or "this process",
        "entries": entries,
    })
    (args.out / f"{args.name}.md").write_text(markdown(setting, cells, walls, total, command.strip()))
    heatmaps(setting, cells, args.out / f"{args.name}.png")
    print(tables(setting, cells))
    print(f"wall time: {time.perf_counter() - start:.1f} s (training {total:.1f} s); outputs in {args.out}")


if __name__ == "__main__":
    main()
