"""Does "regular training fails when narrow" appear as n grows at the narrow edge m = 2n/d? (issue 11)

    python bench/reproduce_scaling.py [--out bench/results] [--name scaling] [--processes 2]
    python bench/reproduce_scaling.py --families constrained,constrained_v --name scaling.v   # V switched on
    python bench/reproduce_scaling.py --quick --out DIR                                       # smoke test
    python bench/reproduce_scaling.py --url http://127.0.0.1:8000 [--key KEY]   # the sweeps trained by a service

Synthetic data (x ~ N(0, I_10) normalized to unit norm, y ~ N(0, 1)), d = 10, tanh, loss 1/(2n) sum (f - y)^2,
full-batch GD with momentum 0.9, r = inf; (n, m) = (250, 50), (500, 100), (1000, 200), i.e. m = 2n/d, the
narrowest width Theorem 1 covers. Families: regular (LeCun init, free outer layer), constrained (mirrored init,
pairwise outer layer) and constrained_v (constrained with zeta, gamma set from v at init, bench/v_family.py).
Learning rates lr_W x lr_v start at {0.5, 1, 2} x {0.05, 0.1, 0.5}; the grid of each (n, family) grows by a factor
2 past every edge a winner sits on until every winner is interior (bench/grids.py), and edges that remain are
reported. 10,000 iterations, metrics every 1,000, Jacobian at the end.

The grid is data: every sweep this script runs is a sweep file (trainer/grid.py: BASE as a job spec plus a grid of
dotted paths, sweep_file below), the file `narrownet sweep` trains and POST /v1/sweeps takes; each is saved in
NAME.json under "sweeps".

Loss normalization: ours is the mean, 1/(2n) sum_i (f(x_i) - y_i)^2. If the paper's is 1/2 sum_i (its eq. (2) lost
the factor in our copy), its gradient is n times ours, so a paper learning rate eta equals our n * eta: our
lr_W = 1 at n = 1000 is the paper's 1e-3, and the paper's grid [1e-4 .. 0.5] is our [0.1 .. 500] at n = 1000.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.grids import Grid, GrowthRule, describe, edge_hits, grow_until_interior  # noqa: E402
from bench.report import finite_or_none, fmt, load_average, run_all, write_json  # noqa: E402
from bench.sweep_runs import Service, add_service_arguments, final_metrics, run_sweeps, service_of  # noqa: E402
from bench.v_family import RULE as V_RULE  # noqa: E402
from bench.v_family import shallow_v_set  # noqa: E402
from trainer.grid import SweepFile  # noqa: E402
from trainer.spec import MAX_LR, JobSpec  # noqa: E402

FAMILIES = ("regular", "constrained", "constrained_v")
# Below this final loss a run has fitted the data to float32 round-off: the order among such configs is noise,
# so their edges are reported but do not grow the grid (bench/grids.py).
FLOOR = 1e-10
FITTED = 1e-4  # "reaches loss < 1e-4"
SINGULAR = 1e-3  # "ends with sigma_min(J) < 1e-3"
STALLED = 0.5  # loss(T) / loss(T/2) above this: the loss has stalled

BASE = {  # every run's job spec; n, width, regime, the learning rates, seeds (and zeta, gamma) fill in the rest
    "name": "scaling", "model": {"arch": "shallow", "activation": "tanh"},
    "data": {"source": "synthetic", "d": 10, "seed": 0, "labels": "gaussian"}, "loss": "square",
    "optim": {"name": "gd", "momentum": 0.9, "iterations": 10_000}, "constraint": {"radius": None},
    "metrics_every": 1_000, "device": "cpu",
}


@dataclass(frozen=True)
class Size:
    n: int
    width: int
    seeds: tuple[int, ...]


@dataclass(frozen=True)
class Setting:
    sizes: tuple[Size, ...]
    lr_hidden: tuple[float, ...]
    lr_outer: tuple[float, ...]
    iterations: int
    metrics_every: int
    families: tuple[str, ...] = ("regular", "constrained")
    max_rounds: int = 4


FULL = Setting(sizes=(Size(250, 50, (0, 1, 2)), Size(500, 100, (0, 1, 2)), Size(1000, 200, (0, 1))),
               lr_hidden=(0.5, 1.0, 2.0), lr_outer=(0.05, 0.1, 0.5), iterations=10_000, metrics_every=1_000)
QUICK = Setting(sizes=(Size(40, 8, (0, 1)), Size(80, 16, (0,))), lr_hidden=(0.5, 1.0), lr_outer=(0.1, 0.5),
                iterations=200, metrics_every=20, max_rounds=1)

READING = (
    "Reading, fixed before the run: the headline (regular training fails when narrow) HOLDS if (1) the median over "
    "seeds of best regular / best constrained final loss grows with n (strictly, from each n to the next), "
    "(2) at the largest n that ratio is >= 10 on every seed, and (3) at the largest n the best regular config of "
    f"every seed has stalled (loss(T)/loss(T/2) > {STALLED}) at sigma_min(J) < {SINGULAR:g}. Otherwise it is NOT "
    "SEEN at this scale. Best = lowest final training loss over the (grown) learning-rate grid, per seed. Winners "
    "left on a grid edge are listed with the verdict."
)


def base_spec(s: Setting, size: Size, family: str, zeta: float | None = None, gamma: float | None = None) -> JobSpec:
    spec = json.loads(json.dumps(BASE))
    spec["name"] = f"scaling-n{size.n}-{family}"
    spec["regime"] = "regular" if family == "regular" else "constrained"
    spec["model"]["width"] = size.width
    spec["data"]["n"] = size.n
    spec["optim"].update(iterations=s.iterations, lr_hidden=s.lr_hidden[0], lr_outer=s.lr_outer[0])
    spec["metrics_every"] = s.metrics_every
    spec["constraint"].update(zeta=zeta, gamma=gamma)
    spec["seed"] = size.seeds[0]
    return JobSpec.model_validate(spec)


def sweep_file(s: Setting, size: Size, family: str, lr_hidden: tuple[float, ...], lr_outer: tuple[float, ...],
               seeds: tuple[int, ...]) -> SweepFile:
    """One product sweep (base job + grid). constrained_v sets zeta, gamma per seed, so it takes one seed."""
    zeta = gamma = None
    if family == "constrained_v":
        if len(seeds) != 1:
            raise ValueError("constrained_v: zeta and gamma come from one seed's init; sweep one seed at a time")
        zeta, gamma = shallow_v_set(size.width, int(BASE["data"]["d"]), seeds[0])  # type: ignore[index]
    base = base_spec(s, size, family, zeta, gamma)
    return SweepFile(base=base, grid={"optim.lr_hidden": list(lr_hidden), "optim.lr_outer": list(lr_outer),
                                      "seed": list(seeds)})


@dataclass
class GroupResult:
    size: Size
    family: str
    entries: list[dict]
    grid: Grid
    rounds: int
    added: list[tuple[int, str, float]]
    unresolved: dict[str, list[str]]
    at_floor: dict[str, list[str]]
    sweeps: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float | None = None




def loss_of(e: dict) -> float:
    return math.inf if e["train_loss"] is None else e["train_loss"]  # a diverged config never wins


def run_group(s: Setting, size: Size, family: str, threads: int = 1, service: Service | None = None) -> GroupResult:
    """Train one (n, family) over its grid, growing the grid until every seed's winner is interior; here, or as
    sweeps of the service at service.url."""
    torch.set_num_threads(threads)
    start, cpu_start = time.perf_counter(), time.process_time()
    entries: list[dict] = []
    sweeps: list[dict] = []
    round_no = [0]

    def run(blocks: list[Grid]) -> None:
        per_seed = [(seed,) for seed in size.seeds] if family == "constrained_v" else [size.seeds]
        files = [sweep_file(s, size, family, block["lr_hidden"], block["lr_outer"], seeds)
                 for block in blocks for seeds in per_seed]
        for sweep, runs in zip(files, run_sweeps(files, service), strict=True):
            sweeps.append(sweep.model_dump(mode="json"))
            c = sweep.base.constraint
            for r, final in zip(runs, final_metrics(runs), strict=True):
                entries.append({
                    "n": size.n, "width": size.width, "family": family, "lr_hidden": r.params["optim.lr_hidden"],
                    "lr_outer": r.params["optim.lr_outer"], "seed": r.params["seed"], "round": round_no[0],
                    "zeta": c.zeta, "gamma": c.gamma, **final, "loss_history": r.loss_history,
                })
        round_no[0] += 1

    def winners(grid: Grid) -> dict[str, tuple[dict[str, float], float]]:
        best: dict[str, tuple[dict[str, float], float]] = {}
        for e in entries:
            if e["lr_hidden"] in grid["lr_hidden"] and e["lr_outer"] in grid["lr_outer"]:
                label = f"seed {e['seed']}"
                if label not in best or loss_of(e) < best[label][1]:
                    best[label] = ({"lr_hidden": e["lr_hidden"], "lr_outer": e["lr_outer"]}, loss_of(e))
        return best

    rule = GrowthRule(factor=2.0, max_rounds=s.max_rounds, floor=FLOOR,
                      limits={"lr_hidden": (1e-4, MAX_LR), "lr_outer": (1e-4, MAX_LR)})
    growth = grow_until_interior({"lr_hidden": s.lr_hidden, "lr_outer": s.lr_outer}, run, winners, rule)
    return GroupResult(size, family, entries, growth.grid, growth.rounds, growth.added,
                       {k: [str(h) for h in v] for k, v in growth.unresolved.items()},
                       {k: [str(h) for h in v] for k, v in growth.at_floor.items()}, sweeps,
                       time.perf_counter() - start, time.process_time() - cpu_start)


# ------------------------------------------------------------------------------------------------ statistics
def loss_ratio(e: dict) -> float | None:
    """loss(T) / loss(T/2): near 1 the loss has stalled, far below 1 it is still falling."""
    hist = e["loss_history"]
    half = hist[-1][0] / 2
    at_half = min(hist, key=lambda h: abs(h[0] - half))[1]
    final = hist[-1][1]
    return final / at_half if final is not None and at_half else None


def group_stats(g: GroupResult) -> dict:
    """Per seed: the best config and the grid counts; over seeds: the median best final loss."""
    on_grid = [e for e in g.entries if e["lr_hidden"] in g.grid["lr_hidden"] and e["lr_outer"] in g.grid["lr_outer"]]
    base = [e for e in on_grid if e["round"] == 0]
    per_seed = {}
    for seed in g.size.seeds:
        mine = [e for e in on_grid if e["seed"] == seed]
        best = min(mine, key=loss_of)
        sig = [e.get("jacobian_sigma_min") for e in mine]
        per_seed[seed] = {
            "best_loss": best["train_loss"], "lr_hidden": best["lr_hidden"], "lr_outer": best["lr_outer"],
            "loss_ratio": loss_ratio(best), "sigma_min": best.get("jacobian_sigma_min"),
            "v_ratio": best.get("v_ratio"), "v_projected_steps": best.get("v_projected_steps"),
            "edge": describe(edge_hits(g.grid, {"lr_hidden": best["lr_hidden"], "lr_outer": best["lr_outer"]})),
            "pairs": len(mine),
            "fitted": sum(loss_of(e) < FITTED for e in mine),
            "fitted_base": sum(loss_of(e) < FITTED for e in base if e["seed"] == seed),
            "pairs_base": sum(1 for e in base if e["seed"] == seed),
            "singular": sum(x is not None and x < SINGULAR for x in sig),
            "diverged": sum(e["train_loss"] is None for e in mine),
            "binding_runs": sum(bool(e.get("v_projected_steps")) for e in mine),
        }
    losses = [loss_of(e) for e in (min((x for x in on_grid if x["seed"] == s), key=loss_of)
                                   for s in g.size.seeds)]
    return {"per_seed": per_seed, "median_best_loss": finite_or_none(statistics.median(losses))}


def reading(stats: dict[tuple[int, str], dict], sizes: tuple[Size, ...], edges: list[str]) -> dict:
    """The verdict of READING, with every quantity it rests on."""
    ns = [z.n for z in sizes]
    ratios: dict[int, dict[int, float]] = {}
    for z in sizes:
        reg, con = stats[(z.n, "regular")]["per_seed"], stats[(z.n, "constrained")]["per_seed"]
        ratios[z.n] = {seed: (reg[seed]["best_loss"] or math.inf) / max(con[seed]["best_loss"] or math.inf, 1e-300)
                       for seed in z.seeds}
    medians = {n: statistics.median(r.values()) for n, r in ratios.items()}
    grows = all(medians[a] < medians[b] for a, b in zip(ns[:-1], ns[1:], strict=True))
    top = ns[-1]
    reg_top = stats[(top, "regular")]["per_seed"]
    big = all(r >= 10 for r in ratios[top].values())
    stalled = all((p["loss_ratio"] or 0) > STALLED and p["sigma_min"] is not None and p["sigma_min"] < SINGULAR
                  for p in reg_top.values())
    holds = grows and big and stalled
    checks = [
        f"(1) median ratio grows with n: {'yes' if grows else 'no'} ("
        + ", ".join(f"n={n}: {medians[n]:.3g}" for n in ns) + ")",
        f"(2) ratio >= 10 on every seed at n={top}: {'yes' if big else 'no'} ("
        + ", ".join(f"seed {s}: {r:.3g}" for s, r in ratios[top].items()) + ")",
        f"(3) best regular config stalled at sigma_min < {SINGULAR:g} on every seed at n={top}: "
        f"{'yes' if stalled else 'no'} ("
        + ", ".join(f"seed {s}: loss(T)/loss(T/2) {fmt(p['loss_ratio'], '.2g')}, sigma_min {fmt(p['sigma_min'], '.2g')}"
                    for s, p in reg_top.items()) + ")",
    ]
    verdict = "HOLDS" if holds else "NOT SEEN at this scale"
    # Not part of the reading: says when the ratios compare losses that are both at float32 round-off level.
    at_floor = {z.n: sum(all((stats[(z.n, g)]["per_seed"][seed]["best_loss"] or math.inf) <= FLOOR
                             for g in ("regular", "constrained")) for seed in z.seeds) for z in sizes}
    note = ("Both best losses are at or below the floor " + f"{FLOOR:g} (round-off level) on "
            + ", ".join(f"{k} of {len(z.seeds)} seeds at n={z.n}" for z, k in zip(sizes, at_floor.values(),
                                                                                 strict=True))
            + ": a ratio between two such losses compares round-off, not failure and success.")
    return {"verdict": verdict, "checks": checks, "ratios": {str(n): r for n, r in ratios.items()},
            "median_ratios": {str(n): v for n, v in medians.items()}, "edges_left": edges,
            "note": note if any(at_floor.values()) else None}


# ------------------------------------------------------------------------------------------------ reporting


def grid_text(grid: Grid) -> str:
    return f"lr_W {list(grid['lr_hidden'])} x lr_v {list(grid['lr_outer'])}"


def tables(s: Setting, groups: list[GroupResult], stats: dict[tuple[int, str], dict]) -> list[str]:
    lines = ["| n | m | family | median best loss | seed | best loss | lr_W | lr_v | winner | loss(T)/loss(T/2) "
             "| sigma_min(J) | max/min abs(v) | P_V binding steps | pairs < 1e-4 (base 3x3) | pairs sigma_min < 1e-3 "
             "| diverged |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for g in groups:
        st = stats[(g.size.n, g.family)]
        for i, (seed, p) in enumerate(st["per_seed"].items()):
            head = (f"| {g.size.n} | {g.size.width} | {g.family} | {fmt(st['median_best_loss'])} " if i == 0
                    else "| | | | ")
            binding = "-" if g.family != "constrained_v" else f"{fmt(p['v_projected_steps'], '.0f')}"
            lines.append(
                head + f"| {seed} | {fmt(p['best_loss'])} | {p['lr_hidden']:g} | {p['lr_outer']:g} | {p['edge']} "
                f"| {fmt(p['loss_ratio'], '.2g')} | {fmt(p['sigma_min'], '.2g')} | {fmt(p['v_ratio'], '.3g')} "
                f"| {binding} | {p['fitted']}/{p['pairs']} ({p['fitted_base']}/{p['pairs_base']}) "
                f"| {p['singular']}/{p['pairs']} | {p['diverged']} |")
    lines += ["", "Grids after growth (a winner on an edge added a value 2x beyond it; at most "
              f"{s.max_rounds} rounds; winners below {FLOOR:g} do not grow the grid):", ""]
    for g in groups:
        extra = "; ".join(f"round {r}: {a}={v:g}" for r, a, v in g.added) or "none"
        left = "; ".join(f"{k}: {', '.join(v)}" for k, v in g.unresolved.items())
        floor = "; ".join(f"{k}: {', '.join(v)}" for k, v in g.at_floor.items())
        lines.append(f"- n={g.size.n} {g.family}: {grid_text(g.grid)}; added {extra}"
                     + (f"; EDGE WINNERS LEFT: {left}" if left else "")
                     + (f"; at the floor, on an edge: {floor}" if floor else "") + f" ({g.seconds:.0f} s)")
    return lines


def v_section(groups: list[GroupResult], stats: dict[tuple[int, str], dict]) -> list[str]:
    """constrained_v against constrained, per seed, on the same grid values where both ran."""
    vg = [g for g in groups if g.family == "constrained_v"]
    if not vg:
        return []
    lines = ["## V switched on (" + V_RULE + ")", "",
             "| n | seed | zeta | gamma | runs where P_V bound / runs | best loss, V on | best loss, V off "
             "| sigma_min(J), V on | V off | binding steps of the V-on winner |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for g in vg:
        off = stats.get((g.size.n, "constrained"))
        for seed, p in stats[(g.size.n, g.family)]["per_seed"].items():
            e = next(e for e in g.entries if e["seed"] == seed)
            q = off["per_seed"][seed] if off else None
            lines.append(f"| {g.size.n} | {seed} | {e['zeta']:.3g} | {e['gamma']:.3g} "
                         f"| {p['binding_runs']}/{p['pairs']} "
                         f"| {fmt(p['best_loss'])} | {fmt(q['best_loss']) if q else 'not run'} "
                         f"| {fmt(p['sigma_min'], '.2g')} | {fmt(q['sigma_min'], '.2g') if q else '-'} "
                         f"| {fmt(p['v_projected_steps'], '.0f')} of {g.entries[0]['loss_history'][-1][0]} |")
    return [*lines, ""]


def plot(groups: list[GroupResult], stats: dict[tuple[int, str], dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"regular": "tab:red", "constrained": "tab:blue", "constrained_v": "tab:green"}
    markers = {"regular": "s", "constrained": "o", "constrained_v": "^"}
    families = list(dict.fromkeys(g.family for g in groups))
    ns = sorted({g.size.n for g in groups})
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for k, family in enumerate(families):
        shift = 1 + 0.04 * (k - (len(families) - 1) / 2)  # side by side on the log axis, so no marker hides another
        for metric, ax in (("best_loss", axes[0]), ("sigma_min", axes[2])):
            xs, ys, med = [], [], []
            for n in ns:
                per = stats[(n, family)]["per_seed"].values()
                vals = [p[metric] for p in per if p[metric] is not None]
                xs += [n * shift] * len(vals)
                ys += vals
                med.append(statistics.median(vals) if vals else math.nan)
            ax.plot(xs, ys, markers[family], color=colors[family], alpha=0.6, mfc="none")
            ax.plot([n * shift for n in ns], med, "-" + markers[family], color=colors[family], label=family)
        for g in groups:
            if g.family != family:
                continue
            for seed, p in stats[(g.size.n, family)]["per_seed"].items():
                best = next(e for e in g.entries if e["seed"] == seed and e["lr_hidden"] == p["lr_hidden"]
                            and e["lr_outer"] == p["lr_outer"])
                steps = [h[0] for h in best["loss_history"] if h[1] is not None]
                loss = [h[1] for h in best["loss_history"] if h[1] is not None]
                axes[1].plot(steps, loss, "-" + markers[family], color=colors[family], markersize=3,
                             alpha=0.3 + 0.7 * g.size.n / max(ns),
                             label=f"{family} n={g.size.n}" if seed == g.size.seeds[0] else None)
    axes[0].set(xscale="log", yscale="log", xlabel="n (m = 2n/d)", ylabel="best final training loss",
                title="best over the lr grid: per seed (open), median (line)")
    axes[1].set(yscale="log", xlabel="iteration", ylabel="training loss", title="loss curves of the best configs")
    axes[2].set(xscale="log", yscale="log", xlabel="n (m = 2n/d)", ylabel="sigma_min(J) at the end",
                title="smallest singular value of dF/dW, best configs")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[1].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(s: Setting, groups: list[GroupResult], stats: dict, verdict: dict | None, meta: dict) -> str:
    lines = [
        "# Scaling n at the narrow edge m = 2n/d (issue 11)", "",
        f"Command: `{meta['command']}`  ",
        f"Wall time {meta['wall_seconds']:.0f} s with {meta['processes']} process(es) of 1 torch thread "
        + (f"submitting sweeps to the service at {meta['url']} " if meta.get("url") else "")
        + f"(CPU time of the training processes {meta['cpu_seconds']:.0f} s; load average at start "
        f"{meta['load_start']}, at end {meta['load_end']}); {platform.machine()}, torch {torch.__version__}.", "",
        "Setup: synthetic x ~ N(0, I_d) normalized to unit norm, y ~ N(0, 1), data seed 0, d = 10; tanh; loss "
        "1/(2n) sum (f - y)^2 (mean; the paper's 1/2 sum would make its learning rates ours divided by n); GD with "
        f"momentum 0.9, r = inf, {s.iterations} iterations, metrics every {s.metrics_every}. Start grid "
        f"lr_W {list(s.lr_hidden)} x lr_v {list(s.lr_outer)}, grown past edge winners (bench/grids.py).", "",
        READING, "",
    ]
    if verdict:
        lines += [f"**Verdict: {verdict['verdict']}.**", "", *[f"- {c}" for c in verdict["checks"]]]
        if verdict["edges_left"]:
            lines.append("- The verdict rests on winners left on a grid edge: " + "; ".join(verdict["edges_left"]))
        if verdict.get("note"):
            lines.append("- Note: " + verdict["note"])
        lines.append("")
    lines += ["## Per (n, family)", "", *tables(s, groups, stats), "", *v_section(groups, stats)]
    return "\n".join(lines)






def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a tiny setting for a smoke test (seconds)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--name", default=None, help="output file stem (default scaling, or scaling.quick)")
    parser.add_argument("--families", default=None, help=f"comma-separated, of {', '.join(FAMILIES)}")
    parser.add_argument("--processes", type=int, default=2,
                        help="(n, family) groups trained in parallel, 1 torch thread each (default 2: two cores)")
    parser.add_argument("--replot", metavar="NAME", help="rebuild NAME.md, NAME.png and the verdict in NAME.json "
                                                         "from NAME.json's runs (no training)")
    add_service_arguments(parser)
    args = parser.parse_args(argv)
    if args.replot:
        replot(args.out, args.replot)
        return
    s = QUICK if args.quick else FULL
    if args.families:
        families = tuple(f.strip() for f in args.families.split(","))
        bad = [f for f in families if f not in FAMILIES]
        if bad:
            parser.error(f"--families: unknown {bad}; choose from {list(FAMILIES)}")
        s = Setting(**{**asdict(s), "sizes": s.sizes, "families": families})
    name = args.name or ("scaling.quick" if args.quick else "scaling")
    command = "python bench/reproduce_scaling.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if {"regular", "constrained"} <= set(s.families):
        print(READING, flush=True)

    load_start = load_average()
    start = time.perf_counter()
    # Largest n first, so that two processes finish together.
    order = sorted(((z, f) for z in s.sizes for f in s.families), key=lambda t: -t[0].n * t[0].width)
    service = service_of(args)
    done = run_all(run_group, [(s, z, f, 1, service) for z, f in order], args.processes)
    groups = sorted(done, key=lambda g: (g.size.n, s.families.index(g.family)))
    for g in groups:
        print(f"  n={g.size.n:<5} {g.family:<14} {len(g.entries)} runs, {g.rounds} growth round(s): {g.seconds:.0f} s",
              flush=True)
    wall = time.perf_counter() - start
    cpu = sum(g.cpu_seconds or 0.0 for g in groups)
    meta = {"command": command.strip(), "wall_seconds": wall, "cpu_seconds": cpu,
            "processes": args.processes, "load_start": load_start, "load_end": load_average(),
            **({"url": args.url} if args.url else {})}
    md = write_report(args.out, name, s, groups, meta)
    print(md)
    print(f"wall time {wall:.0f} s; outputs in {args.out}")


def write_report(out: Path, name: str, s: Setting, groups: list[GroupResult], meta: dict) -> str:
    """NAME.json (every run, the sweeps as data, the verdict), NAME.md and NAME.png; returns the markdown."""
    stats = {(g.size.n, g.family): group_stats(g) for g in groups}
    edges = [f"n={g.size.n} {g.family} {k}: {', '.join(v)}" for g in groups for k, v in g.unresolved.items()
             if g.family in ("regular", "constrained")]
    verdict = reading(stats, s.sizes, edges) if {"regular", "constrained"} <= set(s.families) else None
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / f"{name}.json", {
        **meta, "torch": torch.__version__, "reading": READING, "verdict": verdict, "base": BASE,
        "setting": asdict(s), "floor": FLOOR,
        "groups": [{"n": g.size.n, "width": g.size.width, "family": g.family, "seeds": list(g.size.seeds),
                    "grid": {k: list(v) for k, v in g.grid.items()}, "rounds": g.rounds, "added": g.added,
                    "unresolved": g.unresolved, "at_floor": g.at_floor, "seconds": g.seconds,
                    "cpu_seconds": g.cpu_seconds, "stats": stats[(g.size.n, g.family)]} for g in groups],
        "sweeps": [sw for g in groups for sw in g.sweeps],
        "entries": [e for g in groups for e in g.entries],
    })
    md = markdown(s, groups, stats, verdict, meta)
    (out / f"{name}.md").write_text(md)
    plot(groups, stats, out / f"{name}.png")
    return md


def replot(out: Path, name: str) -> None:
    """The report again from NAME.json alone: the same runs, the current reporting code."""
    report = json.loads((out / f"{name}.json").read_text())
    raw = report["setting"]
    s = Setting(**{**raw, "sizes": tuple(Size(z["n"], z["width"], tuple(z["seeds"])) for z in raw["sizes"]),
                   "lr_hidden": tuple(raw["lr_hidden"]), "lr_outer": tuple(raw["lr_outer"]),
                   "families": tuple(raw["families"])})
    sizes = {z.n: z for z in s.sizes}
    groups = []
    for g in report["groups"]:
        mine = [e for e in report["entries"] if (e["n"], e["family"]) == (g["n"], g["family"])]
        sweeps = [sw for sw in report["sweeps"] if sw["base"]["name"] == f"scaling-n{g['n']}-{g['family']}"]
        groups.append(GroupResult(sizes[g["n"]], g["family"], mine, {k: tuple(v) for k, v in g["grid"].items()},
                                  g["rounds"], [tuple(a) for a in g["added"]], g["unresolved"], g["at_floor"], sweeps,
                                  g["seconds"], g.get("cpu_seconds")))  # None: not recorded
    meta = {k: report[k] for k in ("command", "wall_seconds", "cpu_seconds", "processes", "load_start", "load_end",
                                   "url") if k in report}
    print(write_report(out, name, s, groups, meta))


if __name__ == "__main__":
    main()
