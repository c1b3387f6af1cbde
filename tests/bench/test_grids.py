"""bench/grids.py: edge detection and growing a grid until every winner is interior, on known objectives."""

import itertools
import math

import pytest

from bench.grids import EdgeHit, GrowthRule, describe, edge_hits, grow_until_interior, new_blocks

AXES = {"lr_hidden": (0.5, 1.0, 2.0), "lr_outer": (0.05, 0.1, 0.5)}


def points(blocks):
    return [p for block in blocks for p in itertools.product(*block.values())]


def test_an_interior_winner_has_no_edge_hits():
    assert edge_hits(AXES, {"lr_hidden": 1.0, "lr_outer": 0.1}) == []
    assert describe([]) == "interior"


def test_a_corner_winner_is_on_two_edges_and_a_one_value_axis_on_both_sides():
    hits = edge_hits(AXES, {"lr_hidden": 2.0, "lr_outer": 0.05})
    assert hits == [EdgeHit("lr_hidden", "high", 2.0), EdgeHit("lr_outer", "low", 0.05)]
    assert describe(hits) == "edge: lr_hidden=2 at the top edge, lr_outer=0.05 at the bottom edge"
    assert edge_hits({"lr": (0.1,)}, {"lr": 0.1}) == [EdgeHit("lr", "low", 0.1), EdgeHit("lr", "high", 0.1)]


def test_a_winner_off_the_grid_is_an_error():
    with pytest.raises(ValueError, match="lr_outer"):
        edge_hits(AXES, {"lr_hidden": 1.0, "lr_outer": 0.2})


def test_new_blocks_cover_exactly_the_new_points_once():
    old = {"a": (1.0, 2.0), "b": (10.0,), "c": (5.0, 6.0)}
    new = {"a": (0.5, 1.0, 2.0, 4.0), "b": (10.0, 20.0), "c": (5.0, 6.0)}
    got = points(new_blocks(old, new))
    expected = set(itertools.product(*new.values())) - set(itertools.product(*old.values()))
    assert len(got) == len(set(got)) == len(expected) and set(got) == expected


class Objective:
    """A score over (lr_hidden, lr_outer) that records every point it is asked to run."""

    def __init__(self, score):
        self.score = score
        self.ran: list[tuple[float, float]] = []

    def run(self, blocks):
        self.ran += points(blocks)

    def winners(self, grid):
        on_grid = [p for p in self.ran if p[0] in grid["lr_hidden"] and p[1] in grid["lr_outer"]]
        best = min(on_grid, key=self.score)
        return {"cell": ({"lr_hidden": best[0], "lr_outer": best[1]}, self.score(best))}


def bowl(center):
    return lambda p: (math.log2(p[0] / center[0]) ** 2 + math.log2(p[1] / center[1]) ** 2)


def test_growth_moves_past_each_edge_until_the_winner_is_interior_running_each_point_once():
    objective = Objective(bowl((4.0, 0.1)))  # optimum beyond the top of lr_hidden, inside lr_outer's range
    growth = grow_until_interior(AXES, objective.run, objective.winners, GrowthRule())
    assert growth.grid["lr_hidden"] == (0.5, 1.0, 2.0, 4.0, 8.0)  # 4 won at the top edge, so 8 was tried too
    assert growth.grid["lr_outer"] == AXES["lr_outer"]
    assert growth.added == [(1, "lr_hidden", 4.0), (2, "lr_hidden", 8.0)] and growth.rounds == 2
    assert growth.unresolved == {} and growth.at_floor == {}
    assert sorted(objective.ran) == sorted(itertools.product(*growth.grid.values()))


def test_growth_goes_down_as_well_as_up():
    objective = Objective(bowl((1.0, 0.01)))
    growth = grow_until_interior(AXES, objective.run, objective.winners, GrowthRule())
    assert growth.grid["lr_outer"] == (0.00625, 0.0125, 0.025, 0.05, 0.1, 0.5)
    assert objective.winners(growth.grid)["cell"][0] == {"lr_hidden": 1.0, "lr_outer": 0.0125}
    assert growth.unresolved == {}


def test_a_diverged_neighbour_makes_the_winner_interior():
    objective = Objective(lambda p: math.inf if p[0] > 2 else 1.0 / p[0] + abs(math.log(p[1] / 0.1)))
    growth = grow_until_interior(AXES, objective.run, objective.winners, GrowthRule())
    assert growth.grid["lr_hidden"] == (0.5, 1.0, 2.0, 4.0) and growth.unresolved == {}


def test_limits_and_rounds_stop_the_growth_and_the_edge_is_reported():
    ever_lower = Objective(lambda p: 1.0 / p[0] + abs(math.log(p[1] / 0.1)))
    growth = grow_until_interior(AXES, ever_lower.run, ever_lower.winners,
                                 GrowthRule(limits={"lr_hidden": (0.0, 8.0)}))
    assert growth.grid["lr_hidden"][-1] == 8.0
    assert growth.unresolved == {"cell": [EdgeHit("lr_hidden", "high", 8.0)]}

    ever_lower = Objective(lambda p: 1.0 / p[0] + abs(math.log(p[1] / 0.1)))
    growth = grow_until_interior(AXES, ever_lower.run, ever_lower.winners, GrowthRule(max_rounds=1))
    assert growth.rounds == 1 and growth.unresolved == {"cell": [EdgeHit("lr_hidden", "high", 4.0)]}


def test_winners_at_the_floor_are_reported_but_do_not_grow_the_grid():
    flat = Objective(lambda p: 1e-13 / p[0])  # every config "fits"; the order is noise below the floor
    growth = grow_until_interior(AXES, flat.run, flat.winners, GrowthRule(floor=1e-10))
    assert growth.grid == AXES and growth.rounds == 0
    assert growth.at_floor == {"cell": [EdgeHit("lr_hidden", "high", 2.0), EdgeHit("lr_outer", "low", 0.05)]}
    assert growth.unresolved == {}
