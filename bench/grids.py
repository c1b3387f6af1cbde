"""Best-of-grid results: where the winner sits on the grid, and growing a grid until every winner is interior.

A best-over-the-grid number says something only when the winner has a tested neighbour on every side of every
axis. A winner on the grid's edge says only that the best value may lie beyond it: in issue 11 a conclusion drawn
from winners at the corner (0.5, 0.5) of a learning-rate grid flipped once rates up to 2 were tried.

Axes are numeric and treated as sorted. An axis with a single value has both of its sides on the edge.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

Side = Literal["low", "high"]
Grid = dict[str, tuple[float, ...]]


@dataclass(frozen=True)
class EdgeHit:
    axis: str
    side: Side
    value: float

    def __str__(self) -> str:
        return f"{self.axis}={self.value:g} at the {'top' if self.side == 'high' else 'bottom'} edge"


def edge_hits(axes: Mapping[str, Sequence[float]], winner: Mapping[str, float]) -> list[EdgeHit]:
    """Every (axis, side) on which `winner` takes the axis's smallest or largest grid value."""
    hits = []
    for axis, values in axes.items():
        value = winner[axis]
        if value not in values:
            raise ValueError(f"{axis}: the winner's value {value!r} is not on the grid {list(values)}")
        if value == min(values):
            hits.append(EdgeHit(axis, "low", value))
        if value == max(values):
            hits.append(EdgeHit(axis, "high", value))
    return hits


def describe(hits: Sequence[EdgeHit]) -> str:
    """'interior', or the edges the winner sits on."""
    return "interior" if not hits else "edge: " + ", ".join(str(h) for h in hits)


@dataclass(frozen=True)
class GrowthRule:
    """How a grid grows past an edge: one new value per hit side, `factor` beyond the current extreme, never past
    the axis's limits, for at most `max_rounds` rounds. Winners whose score is at or below `floor` are at the
    numerical floor (every config there is equally good, float round-off decides the order), so their edges are
    reported but do not grow the grid."""

    factor: float = 2.0
    max_rounds: int = 4
    limits: Mapping[str, tuple[float, float]] | None = None  # axis -> (lowest, highest) value allowed
    floor: float = -math.inf

    def next_value(self, axis: str, values: Sequence[float], side: Side) -> float | None:
        lo, hi = (self.limits or {}).get(axis, (0.0, math.inf))
        value = max(values) * self.factor if side == "high" else min(values) / self.factor
        return value if lo <= value <= hi and value not in values else None


def new_blocks(old: Mapping[str, Sequence[float]], new: Mapping[str, Sequence[float]]) -> list[Grid]:
    """Sub-grids (each a product of per-axis value lists) whose union is exactly the points of `new` that are not in
    `old`, without overlap: block i takes the old values on the axes before i, the added values on axis i and all
    values on the axes after i. Each block can be run as one product sweep."""
    axes = list(new)
    blocks = []
    for i, axis in enumerate(axes):
        added = tuple(v for v in new[axis] if v not in old[axis])
        if not added:
            continue
        block = {a: tuple(old[a]) for a in axes[:i]}
        block[axis] = added
        block.update({a: tuple(new[a]) for a in axes[i + 1:]})
        blocks.append(block)
    return blocks


@dataclass
class Growth:
    """The outcome of grow_until_interior: the final grid and the winners' edges that remain."""

    grid: Grid
    rounds: int
    added: list[tuple[int, str, float]]  # (round, axis, value)
    unresolved: dict[str, list[EdgeHit]]  # winner label -> edges left (limits or rounds ran out)
    at_floor: dict[str, list[EdgeHit]]  # winner label -> edges of winners at the floor (not grown past)


def grow_until_interior(grid: Mapping[str, Sequence[float]], run: Callable[[list[Grid]], None],
                        winners: Callable[[Grid], Mapping[str, tuple[Mapping[str, float], float]]],
                        rule: GrowthRule) -> Growth:
    """Run `grid`, then add values past every edge a winner sits on, until every winner is interior, or the rule
    stops the growth (limits, rounds, floor).

    run(blocks): train every point of these product sub-grids (the first call gets the whole grid as one block).
    winners(grid): label -> (the winning point {axis: value}, its score, lower is better), over the points of
    `grid` run so far. Labels are whatever the caller groups by (a cell and a seed, say).
    """
    current: Grid = {axis: tuple(sorted(values)) for axis, values in grid.items()}
    run([dict(current)])
    added: list[tuple[int, str, float]] = []
    rounds = 0
    while True:
        best = winners(current)
        grow: dict[str, set[Side]] = {}
        unresolved: dict[str, list[EdgeHit]] = {}
        at_floor: dict[str, list[EdgeHit]] = {}
        for label, (point, score) in best.items():
            hits = edge_hits(current, point)
            if not hits:
                continue
            if score <= rule.floor:
                at_floor[label] = hits
                continue
            unresolved[label] = hits
            for hit in hits:
                grow.setdefault(hit.axis, set()).add(hit.side)
        bigger = dict(current)
        if rounds < rule.max_rounds:
            for axis, sides in grow.items():
                extra = [rule.next_value(axis, current[axis], side) for side in sorted(sides)]
                fresh = [v for v in extra if v is not None]
                if fresh:
                    bigger[axis] = tuple(sorted({*current[axis], *fresh}))
                    added += [(rounds + 1, axis, v) for v in fresh]
        if bigger == current:
            return Growth(current, rounds, added, unresolved, at_floor)
        rounds += 1
        run(new_blocks(current, bigger))
        current = bigger
