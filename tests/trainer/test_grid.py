"""Sweep files: the grid's cartesian product applied to the base, each config a valid job spec, and errors that
name the axis, the value's index, the value and the reason."""

import pytest
from pydantic import ValidationError

from trainer.grid import AXES, GridError, SweepFile, expand, parse_sweep_file

BASE = {"name": "base", "regime": "constrained", "model": {"arch": "shallow", "width": 20},
        "data": {"source": "synthetic", "n": 40, "d": 4}, "optim": {"name": "gd", "lr": 0.1, "iterations": 10}}


def sweep(grid, **extra):
    return SweepFile.model_validate({"name": "fig4", "base": BASE, "grid": grid, **extra})


def errors(grid, **kwargs):
    with pytest.raises(GridError) as caught:
        expand(sweep(grid), **kwargs)
    return dict(caught.value.fields)


def test_the_product_is_applied_to_the_base_in_order_last_axis_fastest():
    configs = expand(sweep({"regime": ["regular", "constrained"], "model.width": [10, 20],
                            "constraint.radius": [1, None]}))
    assert len(configs) == 8
    assert [c.params for c in configs[:3]] == [
        {"regime": "regular", "model.width": 10, "constraint.radius": 1},
        {"regime": "regular", "model.width": 10, "constraint.radius": None},
        {"regime": "regular", "model.width": 20, "constraint.radius": 1}]
    last = configs[-1].spec
    assert (last.regime, last.model.width, last.constraint.radius, last.name) == ("constrained", 20, None, "fig4-7")
    assert last.optim.lr == 0.1 and last.data.n == 40  # the rest is the base's


def test_a_grid_over_one_learning_rate_splits_the_bases_lr():
    configs = expand(sweep({"optim.lr_hidden": [0.01, 0.5]}))
    assert [(c.spec.optim.hidden_lr, c.spec.optim.outer_lr, c.spec.optim.lr) for c in configs] == [
        (0.01, 0.1, None), (0.5, 0.1, None)]


def test_the_papers_axes_are_allowed():
    assert {"regime", "model.width", "constraint.radius", "optim.lr_hidden", "optim.lr_outer", "seed",
            "model.activation", "data.seed", "optim.iterations"} <= AXES
    assert "name" not in AXES


def test_an_unknown_axis_lists_the_allowed_ones():
    reason = errors({"model.widht": [10]})["grid.model.widht"]
    assert reason.startswith("unknown axis; allowed: ") and "model.width" in reason and "constraint.radius" in reason


def test_a_bad_value_is_named_by_axis_index_value_and_reason():
    found = errors({"regime": ["regular", "constrained"], "model.width": [10, 21],
                    "optim.lr_hidden": [0.1, -1.0]})
    assert found == {"grid.model.width[1]": "21 must be even in the constrained regime (it pairs neurons)",
                     "grid.optim.lr_hidden[1]": "-1.0 is invalid: Input should be greater than 0"}


def test_a_value_that_switches_a_variant_is_blamed_for_its_sections_errors():
    found = errors({"model.arch": ["mlp"]})
    assert found["grid.model.arch[0]"].startswith('"mlp" is invalid: model.')


@pytest.mark.parametrize("grid,field,reason", [
    ({}, "grid", "give at least one axis"),
    ({"seed": []}, "grid.seed", "give at least one value"),
    ({"seed": [1, 2, 1]}, "grid.seed[2]", "1 repeats grid.seed[0]"),
])
def test_empty_and_repeated_values_are_rejected(grid, field, reason):
    assert errors(grid)[field].startswith(reason)


def test_a_grid_larger_than_the_cap_is_rejected_before_it_is_expanded():
    found = errors({"seed": list(range(100)), "data.seed": list(range(100))}, max_configs=1000)
    assert found["grid"] == "10000 configs (100 x 100), more than the 1000 a sweep may have"


def test_the_base_itself_must_be_a_valid_job_spec():
    with pytest.raises(ValidationError) as caught:
        SweepFile.model_validate({"base": {**BASE, "model": {"arch": "shallow", "width": 7}}, "grid": {"seed": [1]}})
    [error] = caught.value.errors()
    assert error["loc"] == ("base",) and "model.width: 7 must be even" in error["msg"]


def test_the_objective_names_a_known_metric():
    assert sweep({"seed": [1]}).objective.model_dump() == {"metric": "train_loss", "mode": "min"}
    with pytest.raises(ValidationError, match="objective.metric"):
        sweep({"seed": [1]}, objective={"metric": "loss", "mode": "min"})


def test_the_old_local_format_becomes_a_grid_over_its_four_axes():
    parsed = parse_sweep_file({"base": BASE, "lr_hidden": [0.1], "lr_outer": [0.2, 0.3], "radius": [1.0, None],
                               "seed": [0]})
    assert parsed.grid == {"optim.lr_hidden": [0.1], "optim.lr_outer": [0.2, 0.3],
                           "constraint.radius": [1.0, None], "seed": [0]}
    assert parsed.sweep_name == "base"
