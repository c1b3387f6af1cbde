"""Which configs can train together as one vectorized program (a pack), and how many fit in memory.

The shallow learner batches configs along a leading dimension C; what may differ between them is what it
carries per config (trainer/shallow/learner.py ConfigGrid): lr_hidden, lr_outer, radius and seed (the name too,
which does not touch training). Everything else (data, architecture, width, regime, activation, optimizer and
its settings, step budget, cadences, device) must be equal. Deep nets (mlp, resnet18) train one config at a
time. Pure functions, no torch: the API plans packs when it accepts a sweep.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from trainer.spec import JobSpec, ShallowModel

# Per-config state a pack holds for its whole run (W, W0, gradient, two optimizer buffers; v alike) plus the
# batch order; activations are processed in cache-sized config chunks, so they do not grow with the pack.
PACK_ELEMENTS = 1 << 27  # ~512 MB of float32 per pack
STATE_COPIES = 5

# Training-set rows and input size of the built-in sources (upper bounds; `limit` lowers the rows).
BUILTIN_SIZES = {"digits": (1797, 64), "mnist5k": (5000, 784), "mnist": (60000, 784), "cifar10": (50000, 3072),
                 "cifar100": (50000, 3072)}


def pack_key(spec: JobSpec) -> str | None:
    """Configs with equal keys can share one vectorized program; None: this config trains alone (deep nets)."""
    if not isinstance(spec.model, ShallowModel):
        return None
    body: dict[str, Any] = spec.model_dump(mode="json")
    for field in ("name", "seed"):
        body.pop(field)
    for field in ("lr", "lr_hidden", "lr_outer"):
        body["optim"].pop(field)
    body["constraint"].pop("radius")
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


def data_size(spec: JobSpec, dataset_size: tuple[int, int] | None = None) -> tuple[int, int]:
    """(training rows, input size) of a config's data, as far as is known without loading it."""
    data = spec.data
    if data.source == "synthetic":
        return data.n, data.d
    rows, size = dataset_size or BUILTIN_SIZES.get(data.source, (1, 1))
    limit = getattr(data, "limit", None)
    return (min(rows, limit) if limit else rows), size


def max_pack_size(spec: JobSpec, rows: int, input_size: int) -> int:
    """How many configs like `spec` one pack may hold: bounded by the memory of their training state."""
    if not isinstance(spec.model, ShallowModel):
        return 1
    m = spec.model.width
    per_config = STATE_COPIES * m * (input_size + 1) + rows
    return max(1, PACK_ELEMENTS // per_config)


def plan_packs(specs: Sequence[JobSpec], size_of: Callable[[JobSpec], tuple[int, int]] = data_size) -> list[list[int]]:
    """Group config indices into packs: equal pack keys together (in first-seen order, configs in their order),
    each group split to the memory bound. A deep-net config is a pack of its own."""
    groups: dict[str, list[int]] = {}
    packs: list[list[int]] = []
    for i, spec in enumerate(specs):
        key = pack_key(spec)
        if key is None:
            packs.append([i])
        else:
            groups.setdefault(key, []).append(i)
    for members in groups.values():
        size = max_pack_size(specs[members[0]], *size_of(specs[members[0]]))
        packs.extend(members[start:start + size] for start in range(0, len(members), size))
    return sorted(packs, key=lambda pack: pack[0])


def _flat(node: Any, path: tuple[str, ...] = ()) -> dict[str, Any]:
    """A JSON object's leaves by dotted path."""
    if isinstance(node, dict) and node:
        return {leaf: value for key, child in node.items() for leaf, value in _flat(child, (*path, key)).items()}
    return {".".join(path): node}


def why_apart(specs: Sequence[JobSpec], packs: Sequence[Sequence[int]],
              size_of: Callable[[JobSpec], tuple[int, int]] = data_size) -> list[str | None]:
    """Per pack (as plan_packs made them), why its configs could not join an earlier pack; None for the first
    pack, and for none other. Said in the terms a sweep's author can change: the fields that differ, or the
    memory bound that split a group."""
    reasons: list[str | None] = []
    seen: dict[str, int] = {}  # pack key -> the first pack with it
    first_shallow: int | None = None
    for n, members in enumerate(packs):
        spec = specs[members[0]]
        key = pack_key(spec)
        if key is None:
            reasons.append(None if n == 0 else f"{spec.model.arch} configs train one at a time: only shallow nets "
                                               "are vectorized")
            continue
        if key in seen:
            reasons.append(f"split from pack {seen[key]}: at most {max_pack_size(spec, *size_of(spec))} configs like "
                           f"these fit one pack ({PACK_ELEMENTS * 4 // 2**20} MiB of training state)")
            continue
        seen[key] = n
        if first_shallow is None:
            first_shallow = n
            reasons.append(None if n == 0 else "the packs before it are deep nets, which train one at a time")
            continue
        ours, theirs = _flat(json.loads(key)), _flat(json.loads(str(pack_key(specs[packs[first_shallow][0]]))))
        differ = sorted(p for p in set(ours) | set(theirs) if ours.get(p) != theirs.get(p))
        reasons.append(f"differs from pack {first_shallow} in {', '.join(differ)}: within a pack only lr_hidden, "
                       "lr_outer, radius and seed may differ")
    return reasons
