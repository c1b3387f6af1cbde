"""The local sweep (trainer.sweep.run_sweep): packs of configs trained as one vectorized program, each config
ending exactly where the same job ends alone."""

import math

import pytest

from trainer.grid import SweepFile, parse_sweep_file
from trainer.loop import train
from trainer.sweep import run_sweep


def _sweep(base, grid, **extra):
    return SweepFile.model_validate({"base": base.model_dump(mode="json", exclude_unset=True), "grid": grid, **extra})


@pytest.mark.parametrize("optim", [{"name": "sgd", "momentum": 0.9},
                                   {"name": "sgd", "momentum": 0.9, "batch_size": 8, "iterations": None,
                                    "epochs": 5, "schedule": "cosine"},
                                   {"name": "adam", "lr_hidden": 0.01, "lr_outer": 0.01}])
@pytest.mark.parametrize("regime,activation", [("constrained", "tanh"), ("regular", "softplus")])
def test_each_config_of_a_pack_ends_bitwise_where_it_ends_alone(tmp_path, make_spec, one_thread, optim, regime,
                                                                 activation):
    base = make_spec(optim=optim, regime=regime, model={"activation": activation})
    sweep = _sweep(base, {"optim.lr_hidden": [0.05, 0.3], "optim.lr_outer": [0.1, 0.02],
                          "constraint.radius": [0.5, None], "seed": [3, 4]})
    result = run_sweep(sweep)
    assert len(result.packs) == 1 and len(result.packs[0].configs) == 16  # one program for the whole grid
    for config, got in zip(result.configs, result.results, strict=True):
        alone = train(config.spec, tmp_path / str(config.index))
        assert got.status == "succeeded"
        assert got.final_metrics == alone.final_metrics, config.params  # exactly: same arithmetic
        assert [h["train_loss"] for h in got.history] == [h["train_loss"] for h in alone.history]


@pytest.mark.slow
def test_paper_setup_2000_steps_pack_within_1e5_of_alone_both_regimes_with_radii(tmp_path, make_spec, one_thread):
    """The issue's bar: final training loss within 1e-5 relative of the lone run after 2,000 steps on the paper's
    synthetic setup (n=1000, d=20, m=100), several configs, both regimes, with radii; on one thread it is exact."""
    base = make_spec(data={"source": "synthetic", "n": 1000, "d": 20, "seed": 0}, model={"width": 100},
                     optim={"name": "gd", "momentum": 0.9, "iterations": 2000, "lr_hidden": 0.1, "lr_outer": 0.1},
                     metrics_every=500, seed=0)
    # (0.5, 0.1) at r = 3 is chaotic: a last-bit difference grew to 2e-3 relative before packs were exact.
    sweep = _sweep(base, {"regime": ["constrained", "regular"], "constraint.radius": [1.0, 3.0, None],
                          "optim.lr_hidden": [0.05, 0.5], "optim.lr_outer": [0.1]})
    result = run_sweep(sweep)
    assert len(result.packs) == 2  # one per regime
    for config, got in zip(result.configs, result.results, strict=True):
        alone = train(config.spec, tmp_path / str(config.index)).final_metrics["train_loss"]
        assert got.final_metrics["train_loss"] == pytest.approx(alone, rel=1e-5, abs=0), config.params
        assert got.final_metrics["train_loss"] == alone, config.params


@pytest.mark.parametrize("v_set", [{}, {"zeta": 0.01, "gamma": 5.0}], ids=["v-off", "v-on"])
def test_a_diverging_config_fails_alone_and_the_rest_match_their_lone_runs(tmp_path, make_spec, one_thread, v_set):
    # With V on the pack also carries each config's P_V binding count, which must shrink with the pack.
    base = make_spec(constraint={"radius": None, **v_set}, optim={"iterations": 100}, metrics_every=5)
    sweep = _sweep(base, {"optim.lr_hidden": [0.1, 100.0], "optim.lr_outer": [0.1, 100.0]})
    result = run_sweep(sweep)
    statuses = [r.status for r in result.results]
    assert statuses[0] == "succeeded" and "failed" in statuses
    for config, got in zip(result.configs, result.results, strict=True):
        if got.status == "failed":
            assert got.error.startswith("TrainingDiverged: training diverged at step")
            assert got.final_metrics is None and all(math.isfinite(h["train_loss"]) for h in got.history)
        else:
            assert got.final_metrics == train(config.spec, tmp_path / str(config.index)).final_metrics


def test_configs_that_cannot_share_a_program_run_in_separate_packs_in_grid_order(make_spec):
    base = make_spec(optim={"iterations": 20})
    sweep = _sweep(base, {"model.width": [8, 16], "regime": ["constrained", "regular"], "seed": [1, 2]})
    result = run_sweep(sweep)
    assert sorted(len(p.configs) for p in result.packs) == [2, 2, 2, 2]
    assert [r.params for r in result.results] == [c.params for c in result.configs]
    assert result.results[5].params == {"model.width": 16, "regime": "constrained", "seed": 2}
    assert all(r.status == "succeeded" for r in result.results)


def test_the_old_local_format_is_read_as_a_grid(make_spec):
    base = make_spec(optim={"iterations": 10}).model_dump(mode="json")
    sweep = parse_sweep_file({"base": base, "lr_hidden": [0.1, 0.2], "radius": [1.0, None]})
    assert sweep.grid == {"optim.lr_hidden": [0.1, 0.2], "constraint.radius": [1.0, None]}
    assert [r.status for r in run_sweep(sweep).results] == ["succeeded"] * 4
    # As the old engine saved them (bench/results/scaling.json): every list, the ones not swept as null.
    saved = parse_sweep_file({"base": base, "lr_hidden": [0.1], "lr_outer": None, "radius": None, "seed": [1, 2]})
    assert saved.grid == {"optim.lr_hidden": [0.1], "seed": [1, 2]}
