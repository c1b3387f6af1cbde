"""`narrownet plan FILE.json`: what a job spec or a sweep file would be, asked of the service (POST /v1/plan);
nothing is queued."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from narrownet.cli.common import JsonOpt, KeyOpt, UrlOpt, api_errors, client, out, print_json, read_json_file

app = typer.Typer()


def _si(value: float, unit: str) -> str:
    for prefix, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def _bytes(value: float) -> str:
    for prefix, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= scale:
            return f"{value / scale:.3g} {prefix}"
    return f"{value:.0f} B"


def _seconds(value: float) -> str:
    if value >= 3600:
        return f"{value / 3600:.2g} h"
    return f"{value / 60:.2g} min" if value >= 120 else f"{value:.2g} s"


def summary(plan: dict[str, Any]) -> str:
    """The plan as a few lines a person reads."""
    spec = plan["spec"]
    lines = [f"plan for {spec['name']} ({spec['regime']}, {spec['model']['arch']})  spec_hash "
             f"{plan['spec_hash'] or 'none (data content unreadable)'}"]
    if (data := plan.get("data")) is not None:
        lines.append(f"data: {data['n_train']} training + {data['n_test']} test samples of shape "
                     f"{tuple(data['sample_shape'])}, {data['outputs']} outputs ({data['task']})")
    if (w := plan.get("width")) is not None:
        lines.append(f"width: {w['layer']}: m = {w['m']}, n = {w['n']}, d = {w['d']}, 2n/d = "
                     f"{w['two_n_over_d']:.4g} -> {w['verdict']}")
        lines.append(f"  counted as: {w['counted_as']}")
    if (p := plan.get("parameters")) is not None:
        lines.append(f"parameters: {p['total']:,} total; hidden layer {p['hidden_layer']:,}; outer {p['outer']:,}; "
                     f"constrained {p['constrained']:,}" + (f"; buffers {p['buffers']:,}" if p["buffers"] else ""))
    if (c := plan.get("compute")) is not None:
        lines.append(f"compute: {c['steps']:,} steps x {_si(c['flops_per_step'], 'FLOP')} + {c['evaluations']:,} "
                     f"evaluations x {_si(c['flops_per_evaluation'], 'FLOP')} = {_si(c['flops_per_run'], 'FLOP')}")
    if (m := plan.get("memory")) is not None:
        lines.append(f"memory on {m['device']}: ~{_bytes(m['total'])} peak (parameters {_bytes(m['parameters'])}, "
                     f"optimizer {_bytes(m['optimizer_state'])}, activations {_bytes(m['activations'])}, data "
                     f"{_bytes(m['data_on_device'])}); data in host memory {_bytes(m['host_data'])}")
    if (k := plan.get("checkpoint")) is not None:
        lines.append(f"checkpoint: {_bytes(k['bytes'])} each, {k['written']} written, at most "
                     f"{_bytes(k['kept_on_disk'])} kept")
    q = plan["queue"]
    lines.append(f"queue {q['name']}: {q['queued']} queued and {q['running']} running ahead; yours queued "
                 f"{q['yours_queued']} of {q['yours_cap']}")
    e = plan["estimate"]
    lines.append(f"estimated run time: {_seconds(e['seconds'])} ({e['basis']})" if e["seconds"] is not None
                 else f"estimated run time: {e['basis']}")
    if plan.get("reusable_job_id"):
        lines.append(f"already trained: job {plan['reusable_job_id']} succeeded with this spec_hash "
                     "(`narrownet submit --reuse` returns it instead of training again)")
    for warning in plan.get("warnings", []):
        lines.append(f"{warning['level']}: {warning['field']}: {warning['message']}")
    return "\n".join(lines)


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{axis}={json.dumps(value)}" for axis, value in params.items())


def sweep_summary(plan: dict[str, Any]) -> str:
    """A sweep's plan as lines a person reads: totals, packs and why they are apart, one line per config."""
    t = plan["totals"]
    lines = [f"plan for sweep {plan['name']}: {t['configs']} configs over {', '.join(plan['axes'])}",
             f"to train: {t['to_train']} in {len(plan['packs'])} pack(s); reused: {t['reused']} (already trained)",
             f"parameters: {t['parameters']:,} summed; compute: {_si(t['flops'], 'FLOP')} summed"]
    if t["largest_pack_memory_bytes"] is not None:
        lines.append(f"largest pack: ~{_bytes(t['largest_pack_memory_bytes'])} peak device memory (an upper bound)")
    lines.append(f"estimated run time: {_seconds(t['estimated_seconds'])} summed over the configs to train (one "
                 "worker, one after another)" if t["estimated_seconds"] is not None else
                 f"estimated run time: no estimate yet for {t['configs_without_estimate']} config(s)")
    for q in plan["queues"]:
        lines.append(f"queue {q['name']}: {q['queued']} queued and {q['running']} running ahead")
    lines.append(f"your queued sweep configs: {plan['queued_configs']} of {plan['queued_configs_cap']}")
    for p in plan["packs"]:
        how = "vectorized" if p["vectorized"] else "one at a time"
        apart = f": {p['apart_because']}" if p["apart_because"] else ""
        lines.append(f"pack {p['index']}: {p['size']} config(s) on {p['queue']}, {how}{apart}")
    for c in plan["configs"]:
        counts = []
        if c["parameters"] is not None:
            counts.append(f"{c['parameters']['total']:,} parameters")
        if c["compute"] is not None:
            counts.append(_si(c["compute"]["flops_per_run"], "FLOP"))
        if c["memory"] is not None:
            counts.append(f"~{_bytes(c['memory']['total'])}")
        if c["estimate"]["seconds"] is not None:
            counts.append(_seconds(c["estimate"]["seconds"]))
        where = (f"reuses job {c['reusable_job_id']}" if c["reused"] else
                 f"pack {c['pack']}" + (f" (job {c['reusable_job_id']} has it: --reuse)" if c["reusable_job_id"]
                                        else ""))
        lines.append(f"  #{c['index']} {_params(c['params'])}: {', '.join(counts) or 'not counted'}; {where}")
    for warning in plan["warnings"]:
        lines.append(f"{warning['level']}: {warning['field']}: {warning['message']}")
    return "\n".join(lines)


def show(answer: dict[str, Any], as_json: bool) -> None:
    """Print a job's or a sweep's plan; exit 1 when it says the run would fail."""
    if as_json:
        print_json(answer)
    else:
        text = sweep_summary(answer) if "packs" in answer else summary(answer)
        out.print(text, highlight=False, markup=False)
    if any(w["level"] == "error" for w in answer.get("warnings", [])):
        raise typer.Exit(1)


@app.command()
def plan(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="job spec or sweep file (JSON)")],
    reuse: Annotated[bool, typer.Option("--reuse", help="a sweep: leave out configs you already trained, as "
                                                        "`narrownet sweep submit --reuse` would")] = False,
    as_json: JsonOpt = False, url: UrlOpt = None, key: KeyOpt = None,
) -> None:
    """Plan a job or a sweep without queueing it: width vs the paper's range, counts, queue, estimated run time,
    a sweep's packs and why configs train apart, warnings."""
    body = read_json_file(path, "a job spec or a sweep file")
    with api_errors(url), client(url, key) as api:
        answer = api.plan(body, reuse=reuse)
    show(answer, as_json)
