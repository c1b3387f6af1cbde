"""The paper's synthetic experiment (Figure 4 a-d), scaled to run in about 15 minutes on a 2-core CPU.

    python bench/reproduce_synthetic.py [--quick] [--out bench/results] [--processes 2]
    python bench/reproduce_synthetic.py --url http://127.0.0.1:8000 [--key KEY] [--quick]   # the grids as sweeps of a
        # running service (`narrownet serve` is enough): the same tables and heatmaps, the same numbers
    python bench/reproduce_synthetic.py --name synthetic.long --widths 10,20,40,80 --radii 1,3 --seeds 0,1,2 \
        --iterations 20000 --families constrained,regular     # a follow-up on a few cells with a longer budget

Cells are widths x radii x families. Families: constrained (mirrored init, pairwise outer layer, W projected on the
ball), regular (LeCun init, free outer layer; with finite r the paper's ablation, regular + ball) and constrained_v
(constrained with V switched on: zeta and gamma from v at init, bench/v_family.py). In each cell every
(lr_W, lr_v) pair of the grid is trained (full-batch GD, momentum 0.9, square loss, tanh) and the cell reports the
lowest FINAL training loss over the grid (Figure 4 a/b) and the Jacobian's smallest singular value of that best
config (Figure 4 c/d). The grid of each (width, family) starts at the given values and grows by a factor 2 past
every edge a winner sits on (any radius, any seed), until every winner is interior; edges that remain are reported
(bench/grids.py). All radii and learning rates of one (width, family) are sweep files (trainer/grid.py, the format
of `narrownet sweep` and POST /v1/sweeps), trained here pack by pack as vectorized programs (trainer.sweep) or, with
--url, submitted to the service, whose workers train the same packs (bench/sweep_runs.py).
Writes NAME.json (every config's final metrics, the settings, the grids), NAME.md (tables) and NAME.png
(heatmaps) into --out; NAME defaults to "synthetic". With several seeds a cell's value is computed per seed, and
the tables show the median [min, max] over seeds.

Loss normalization: ours is the mean, 1/(2n) sum_i (f(x_i) - y_i)^2. If the paper's is 1/2 sum_i (the factor was
lost from our copy), its gradient is n times ours and a paper learning rate eta is our n * eta: at n = 200 the
paper's grid [1e-4 .. 0.5] is our [0.02 .. 100].
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.grids import Grid, GrowthRule, describe, edge_hits, grow_until_interior  # noqa: E402
from bench.report import finite_or_none, fmt, load_average, run_all, write_json  # noqa: E402
from bench.sweep_runs import Service, add_service_arguments, final_metrics, run_sweeps, service_of  # noqa: E402
from bench.v_family import RULE as V_RULE  # noqa: E402
from bench.v_family import shallow_v_set  # noqa: E402
from trainer.grid import SweepFile  # noqa: E402
from trainer.init import init_batch  # noqa: E402
from trainer.spec import MAX_LR, JobSpec  # noqa: E402

FAMILIES = ("constrained", "constrained_v", "regular")
PAPER_LRS = (1e-4, 1e-3, 5e-3, 1e-2, 5e-2, 1e-1, 5e-1)
# Below this final loss a run has fitted the data to float32 round-off: the order among such configs is noise,
# so their edges are reported but do not grow the grid.
FLOOR = 1e-10


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
    families: tuple[str, ...] = FAMILIES
    max_rounds: int = 4  # grid growth rounds (0: the grid as given)


# n = 200, d = 20: 2n/d = 20, so 20..160 are the paper's narrow widths (2n/d <= m < n); m = 10 lies below the
# theorem's range, as a control. Radii span ||W0||_F ~ sqrt(m) (4.5 at m = 20, 12.6 at m = 160). The grid starts
# at the paper's values from 5e-3 up and grows past edge winners in both directions.
FULL = Setting(n=200, d=20, widths=(10, 20, 40, 80, 160), radii=(1.0, 3.0, 10.0, None),
               lr_hidden=PAPER_LRS[2:], lr_outer=PAPER_LRS[2:], iterations=2000)
QUICK = Setting(n=40, d=8, widths=(10, 20), radii=(1.0, None), lr_hidden=(0.1, 0.5), lr_outer=(0.1, 0.5),
                iterations=50, max_rounds=1)


def regime_of(family: str) -> str:
    return "regular" if family == "regular" else "constrained"


def base_spec(s: Setting, family: str, width: int, seed: int, zeta: float | None = None,
              gamma: float | None = None) -> JobSpec:
    return JobSpec.model_validate({
        "name": f"fig4-{family}-m{width}", "regime": regime_of(family),
        "model": {"arch": "shallow", "width": width, "activation": "tanh"},
        "data": {"source": "synthetic", "n": s.n, "d": s.d, "seed": s.data_seed, "labels": s.labels},
        "loss": "square",
        "optim": {"name": "gd", "momentum": 0.9, "lr_hidden": s.lr_hidden[0], "lr_outer": s.lr_outer[0],
                  "iterations": s.iterations},
        "constraint": {"zeta": zeta, "gamma": gamma},
        "metrics_every": max(1, s.iterations // s.metrics_points), "seed": seed, "device": "cpu",
    })


def init_norm(regime: str, width: int, d: int, seed: int) -> float:
    """||W0||_F of the initialization a config with this seed starts from."""
    W, _ = init_batch(regime, width, d, 1, [seed])
    return float(torch.linalg.vector_norm(W))


def loss_key(entry: dict) -> float:
    loss = entry["train_loss"]
    return loss if loss is not None else math.inf  # a diverged config never wins a cell


def sweep_file(s: Setting, family: str, width: int, block: Grid, seeds: tuple[int, ...]) -> SweepFile:
    """One block of a row's lr grid over all radii and the given seeds: the file `narrownet sweep` and POST /v1/sweeps
    take. V's zeta and gamma come from one seed's init, so the V family sweeps one seed at a time."""
    zeta, gamma = shallow_v_set(width, s.d, seeds[0]) if family == "constrained_v" else (None, None)
    return SweepFile(base=base_spec(s, family, width, seeds[0], zeta, gamma),
                     grid={"optim.lr_hidden": list(block["lr_hidden"]), "optim.lr_outer": list(block["lr_outer"]),
                           "constraint.radius": list(s.radii), "seed": list(seeds)})


def run_row(s: Setting, width: int, family: str, service: Service | None = None) -> dict:
    """Train one (width, family) row over all radii and seeds, growing its lr grid until the winners are interior;
    here, or as sweeps of the service at service.url."""
    torch.set_num_threads(1)
    start = time.perf_counter()
    w0_norms = {seed: init_norm(regime_of(family), width, s.d, seed) for seed in s.seeds}
    entries: list[dict] = []
    rounds = [0]

    def run(blocks: list[Grid]) -> None:
        groups = [(seed,) for seed in s.seeds] if family == "constrained_v" else [s.seeds]
        sweeps = [sweep_file(s, family, width, block, seeds) for block in blocks for seeds in groups]
        for sweep, runs in zip(sweeps, run_sweeps(sweeps, service), strict=True):
            c = sweep.base.constraint
            for r, final in zip(runs, final_metrics(runs), strict=True):
                seed = r.params["seed"]
                entries.append({
                    "width": width, "family": family, "regime": regime_of(family),
                    "radius": r.params["constraint.radius"], "lr_hidden": r.params["optim.lr_hidden"],
                    "lr_outer": r.params["optim.lr_outer"], "seed": seed, "round": rounds[0], "zeta": c.zeta,
                    "gamma": c.gamma, **final, "w0_norm": w0_norms[seed], "loss_history": r.loss_history,
                })
        rounds[0] += 1

    def winners(grid: Grid) -> dict[str, tuple[dict[str, float], float]]:
        best: dict[str, tuple[dict[str, float], float]] = {}
        for e in entries:
            if e["lr_hidden"] in grid["lr_hidden"] and e["lr_outer"] in grid["lr_outer"]:
                label = f"r={radius_label(e['radius'])} seed {e['seed']}"
                if label not in best or loss_key(e) < best[label][1]:
                    best[label] = ({"lr_hidden": e["lr_hidden"], "lr_outer": e["lr_outer"]}, loss_key(e))
        return best

    rule = GrowthRule(factor=2.0, max_rounds=s.max_rounds, floor=FLOOR,
                      limits={"lr_hidden": (1e-5, MAX_LR), "lr_outer": (1e-5, MAX_LR)})
    growth = grow_until_interior({"lr_hidden": s.lr_hidden, "lr_outer": s.lr_outer}, run, winners, rule)
    seconds = time.perf_counter() - start
    print(f"  m={width:<4} {family:<14} {len(entries)} configs x {s.iterations} it, {growth.rounds} growth "
          f"round(s): {seconds:6.1f} s", flush=True)
    return {"width": width, "family": family, "grid": {k: list(v) for k, v in growth.grid.items()},
            "rounds": growth.rounds, "added": growth.added,
            "unresolved": {k: [str(h) for h in v] for k, v in growth.unresolved.items()},
            "at_floor": {k: [str(h) for h in v] for k, v in growth.at_floor.items()},
            "seconds": seconds, "entries": entries}


Cell = tuple[int, str, float | None]  # (width, family, radius)


def best_per_cell(entries: list[dict], rows: list[dict]) -> dict[Cell, list[dict]]:
    """Per cell, per seed (in seed order): the config with the lowest final loss over the row's final grid, with
    where it sits on that grid ("edge")."""
    grids = {(r["width"], r["family"]): r["grid"] for r in rows}
    best: dict[tuple[Cell, int], dict] = {}
    for e in entries:
        grid = grids[(e["width"], e["family"])]
        if e["lr_hidden"] not in grid["lr_hidden"] or e["lr_outer"] not in grid["lr_outer"]:
            continue
        key = ((e["width"], e["family"], e["radius"]), e["seed"])
        if key not in best or loss_key(e) < loss_key(best[key]):
            best[key] = e
    cells: dict[Cell, list[dict]] = {}
    for (cell, _), e in sorted(best.items(), key=lambda item: item[0][1]):
        hits = edge_hits(grids[(cell[0], cell[1])], {"lr_hidden": e["lr_hidden"], "lr_outer": e["lr_outer"]})
        below = e["train_loss"] is not None and e["train_loss"] <= FLOOR
        cells.setdefault(cell, []).append({**e, "edge": describe(hits) + (" (at the floor)" if hits and below else ""),
                                           "on_edge": bool(hits), "at_floor": below})
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


def radius_label(r: float | None) -> str:
    return "inf" if r is None else f"{r:g}"


def summary(runs: list[dict], metric: str) -> str:
    """One seed: its value; several: median [min, max] over seeds. A dagger marks a winner left on a grid edge
    above the floor (the value might improve past the edge)."""
    values = [e.get(metric) for e in runs]
    mark = " †" if any(e["on_edge"] and not e["at_floor"] for e in runs) else ""
    if len(values) == 1:
        return fmt(values[0]) + mark
    finite = [v for v in values if v is not None]
    spread = f" [{fmt(min(finite), '.1e')}, {fmt(max(finite), '.1e')}]" if finite else ""
    return fmt(median(values), ".1e") + spread + mark


def tables(s: Setting, cells: dict[Cell, list[dict]]) -> str:
    cols = [(g, r) for g in s.families for r in s.radii]
    head = "| m | m d / n | " + " | ".join(f"{g} r={radius_label(r)}" for g, r in cols) + " |"
    rule = "|---|---|" + "---|" * len(cols)

    def matrix(metric: str) -> list[str]:
        rows = [head, rule]
        for m in s.widths:
            below = " (< 2n/d)" if m < 2 * s.n / s.d else ""
            values = [summary(cells[(m, g, r)], metric) for g, r in cols]
            rows.append(f"| {m}{below} | {m * s.d / s.n:g} | " + " | ".join(values) + " |")
        return rows

    detail = ["| m | family | r | seed | best final loss | lr_W | lr_v | winner on the grid | loss(T)/loss(T/2) "
              "| ‖W-W0‖_F | ‖W0‖_F | sigma_min(J) | max/min abs(v) | P_V binding steps |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in s.widths:
        for g, r in cols:
            for e in cells[(m, g, r)]:
                half, final = loss_at_half(e), e["train_loss"]
                ratio = final / half if final is not None and half else None
                binding = fmt(e.get("v_projected_steps"), ".0f") if g == "constrained_v" else "-"
                detail.append(f"| {m} | {g} | {radius_label(r)} | {e['seed']} | {fmt(final)} | {e['lr_hidden']:g} "
                              f"| {e['lr_outer']:g} | {e['edge']} | {fmt(ratio, '.2g')} | {fmt(e['w_dist'], '.2f')} "
                              f"| {e['w0_norm']:.2f} | {fmt(e.get('jacobian_sigma_min'), '.3g')} "
                              f"| {fmt(e.get('v_ratio'), '.3g')} | {binding} |")
    seeds = f", median [min, max] over init seeds {list(s.seeds)}" if len(s.seeds) > 1 else ""
    return "\n".join([
        f"### Best final training loss over the learning-rate grid (Figure 4 a/b){seeds}", "",
        "† = a winner of the cell sits on its grid's edge after growth, above the floor: read it as an upper bound.",
        "", *matrix("train_loss"), "",
        f"### Smallest singular value of the Jacobian dF/dW at the end, best config of each cell (Figure 4 c/d){seeds}",
        "", *matrix("jacobian_sigma_min"), "",
        "### Best config per cell (loss(T)/loss(T/2) near 1: the loss has stalled; far below 1: still descending)",
        "", *detail, "",
    ])


def v_summary(s: Setting, entries: list[dict], cells: dict[Cell, list[dict]]) -> list[str]:
    """V switched on against off: how often P_V binds, and what it does to the cell's best loss and sigma_min."""
    if "constrained_v" not in s.families:
        return []
    lines = [f"### V switched on ({V_RULE}) against V off", "",
             "| m | r | seed | zeta | gamma | runs where P_V bound | mean binding steps of those | best loss V on "
             "| V off | sigma_min(J) V on | V off |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in s.widths:
        for r in s.radii:
            off = {e["seed"]: e for e in cells.get((m, "constrained", r), [])}
            for e in cells[(m, "constrained_v", r)]:
                runs = [x for x in entries if (x["width"], x["family"], x["radius"], x["seed"]) ==
                        (m, "constrained_v", r, e["seed"])]
                bound = [x["v_projected_steps"] for x in runs if x.get("v_projected_steps")]
                q = off.get(e["seed"])
                mean = f"{sum(bound) / len(bound):.0f} of {s.iterations}" if bound else "-"
                lines.append(f"| {m} | {radius_label(r)} | {e['seed']} | {e['zeta']:.3g} | {e['gamma']:.3g} "
                             f"| {len(bound)}/{len(runs)} | {mean} | {fmt(e['train_loss'])} "
                             f"| {fmt(q['train_loss']) if q else 'not run'} "
                             f"| {fmt(e.get('jacobian_sigma_min'), '.3g')} "
                             f"| {fmt(q.get('jacobian_sigma_min'), '.3g') if q else '-'} |")
    return [*lines, ""]


def grids_text(s: Setting, rows: list[dict]) -> list[str]:
    lines = [f"### Grids after growth (2x past each edge winner, at most {s.max_rounds} rounds; winners at or below "
             f"{FLOOR:g} do not grow the grid)", ""]
    for r in rows:
        added = "; ".join(f"round {k}: {a}={v:g}" for k, a, v in r["added"]) or "nothing"
        left = "; ".join(f"{k}: {', '.join(v)}" for k, v in r["unresolved"].items())
        lines.append(f"- m={r['width']} {r['family']}: lr_W {r['grid']['lr_hidden']} x lr_v {r['grid']['lr_outer']}; "
                     f"added {added}" + (f"; EDGE WINNERS LEFT: {left}" if left else "")
                     + f" ({r['seconds']:.0f} s)")
    return [*lines, ""]


def markdown(s: Setting, cells: dict[Cell, list[dict]], rows: list[dict], entries: list[dict], meta: dict) -> str:
    return "\n".join([
        "# Synthetic experiment (the paper's Figure 4), reproduced at CPU scale", "",
        f"Command: `{meta['command']}`  ", f"Wall time {meta['wall_seconds']:.0f} s, "
        + (f"the sweeps trained by the service at {meta['url']}, {meta['processes']} row(s) in flight"
           if meta.get("url") else f"{meta['processes']} process(es) of 1 torch thread")
        + f"; load average {meta['load_start']} at start, {meta['load_end']} at the end "
        f"({platform.machine()}, torch {torch.__version__}).", "",
        f"Data: n = {s.n}, d = {s.d} (2n/d = {2 * s.n / s.d:g}), x ~ N(0, I) normalized to unit norm, "
        f"{s.labels} labels, data seed {s.data_seed}. Net: 1 hidden layer, tanh, loss 1/(2n) sum (f - y)^2 (the mean; "
        f"if the paper's loss is 1/2 sum, its learning rates are ours divided by n = {s.n}). "
        f"GD, momentum 0.9, {s.iterations} iterations (the paper: 200,000), init seeds {list(s.seeds)}. "
        f"Start grid: lr_W in {list(s.lr_hidden)}, lr_v in {list(s.lr_outer)}, grown per (width, family) past edge "
        f"winners (the paper: 7 x 7 of {list(PAPER_LRS)}). Constrained = mirrored LeCun init + pairwise (v, -v) + W "
        "projected on the ball ||W - W0||_F <= r; constrained_v = the same with v projected on V "
        f"({V_RULE}). Regular = LeCun init, free outer layer; with finite r it is the paper's ablation (regular + "
        "ball). Each cell: the lowest FINAL training loss over the grid.", "",
        tables(s, cells), *v_summary(s, entries, cells), *grids_text(s, rows),
    ])


def heatmaps(s: Setting, cells: dict[Cell, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    def grid(family: str, metric: str) -> list[list[float]]:
        values = [[median([e.get(metric) for e in cells[(m, family, r)]]) for r in s.radii] for m in s.widths]
        return [[math.nan if v is None else v for v in line] for line in values]

    cols = len(s.families)
    fig, axes = plt.subplots(2, cols, figsize=(2 + 3.2 * len(s.radii) * cols / 2 + 2, 3 + 1.8 * len(s.widths)),
                             squeeze=False)
    for row, (metric, title, cmap) in enumerate((("train_loss", "best final training loss", "viridis"),
                                                 ("jacobian_sigma_min", "sigma_min(J) at the end", "magma"))):
        values = [x for g in s.families for line in grid(g, metric) for x in line if x == x and x > 0]
        norm = LogNorm(vmin=max(min(values, default=1e-12), 1e-12), vmax=max(values, default=1.0))
        for col, family in enumerate(s.families):
            ax = axes[row][col]
            data = grid(family, metric)
            image = ax.imshow([[max(x, norm.vmin) for x in line] for line in data], norm=norm, cmap=cmap,
                              aspect="auto")
            for i, line in enumerate(data):
                for j, x in enumerate(line):
                    edge = any(e["on_edge"] and not e["at_floor"] for e in cells[(s.widths[i], family, s.radii[j])])
                    ax.text(j, i, ("div." if x != x else f"{x:.1e}") + (" †" if edge else ""), ha="center",
                            va="center", fontsize=7,
                            color="white" if x != x or norm(max(x, norm.vmin)) < 0.5 else "black")
            ax.set_xticks(range(len(s.radii)), [radius_label(r) for r in s.radii])
            ax.set_yticks(range(len(s.widths)), [str(m) for m in s.widths])
            ax.set_xlabel("radius r")
            ax.set_ylabel("width m")
            ax.set_title(f"{family}: {title}", fontsize=9)
            fig.colorbar(image, ax=ax)
    seeds = f", median over {len(s.seeds)} seeds" if len(s.seeds) > 1 else ""
    fig.suptitle(f"n={s.n}, d={s.d}, {s.iterations} GD iterations, best over the grown lr grid{seeds} "
                 "(† winner left on a grid edge)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(","))


def radii(text: str) -> tuple[float | None, ...]:
    return tuple(None if x.strip() == "inf" else float(x) for x in text.split(","))


def ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(","))


def families(text: str) -> tuple[str, ...]:
    chosen = tuple(x.strip() for x in text.split(","))
    bad = [f for f in chosen if f not in FAMILIES]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown families {bad}; choose from {list(FAMILIES)}")
    return chosen


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a tiny grid for a smoke test (seconds)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--name", default="synthetic", help="output file stem")
    # One torch thread per process: on a shared 2-core machine, two OpenMP threads competing with other processes
    # ran ~10x slower. Parallelism comes from processes, one (width, family) row each.
    parser.add_argument("--processes", type=int, default=2, help="rows trained in parallel (1 thread each); with "
                                                                  "--url, rows whose sweeps are in flight at once")
    add_service_arguments(parser)
    overrides = {  # each replaces one field of the chosen setting
        "n": int, "d": int, "labels": str, "iterations": int, "widths": ints, "radii": radii, "lr_hidden": floats,
        "lr_outer": floats, "seeds": ints, "families": families, "max_rounds": int,
    }
    for name, parse in overrides.items():
        parser.add_argument("--" + name.replace("_", "-"), type=parse, default=None, help=f"override {name}")
    args = parser.parse_args(argv)
    setting = QUICK if args.quick else FULL
    changes = {f: getattr(args, f) for f in overrides if getattr(args, f) is not None}
    setting = Setting(**{**asdict(setting), **changes})
    command = "python bench/reproduce_synthetic.py " + " ".join(argv if argv is not None else sys.argv[1:])

    load_start = load_average()
    start = time.perf_counter()
    service = service_of(args)
    tasks = sorted(((setting, m, f, service) for m in setting.widths for f in setting.families), key=lambda t: -t[1])
    rows = sorted(run_all(run_row, tasks, args.processes),
                  key=lambda r: (setting.widths.index(r["width"]), setting.families.index(r["family"])))
    total = time.perf_counter() - start
    entries = [e for r in rows for e in r.pop("entries")]
    cells = best_per_cell(entries, rows)
    meta = {"command": command.strip(), "wall_seconds": total, "processes": args.processes,
            "load_start": load_start, "load_end": load_average(), **({"url": args.url} if args.url else {})}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / f"{args.name}.json", {
        **meta, "torch": torch.__version__, "setting": asdict(setting), "families": list(setting.families),
        "floor": FLOOR, "rows": rows, "entries": entries,
    })
    (args.out / f"{args.name}.md").write_text(markdown(setting, cells, rows, entries, meta))
    heatmaps(setting, cells, args.out / f"{args.name}.png")
    print(tables(setting, cells))
    print("\n".join(v_summary(setting, entries, cells) + grids_text(setting, rows)))
    print(f"wall time: {time.perf_counter() - start:.1f} s (training {total:.1f} s); outputs in {args.out}")


if __name__ == "__main__":
    main()
