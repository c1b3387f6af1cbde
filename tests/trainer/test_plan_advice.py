"""The planner's warnings: what would fail (the worker's own checks, made before queueing) and what is probably not
what the researcher meant."""

from __future__ import annotations

import pytest

from trainer.data import DataError, load_data
from trainer.fit import check_model_fits
from trainer.plan import DataShape, data_shape, plan_job
from trainer.spec import MAX_MLP_PARAMS, JobSpec


def job(model: dict | None = None, data: dict | None = None, **overrides) -> JobSpec:
    spec = {"regime": "constrained", "model": model or {"arch": "shallow", "width": 40},
            "data": data or {"source": "synthetic", "n": 200, "d": 20},
            "optim": {"name": "gd", "lr": 5.0, "momentum": 0.9, "iterations": 100}, "device": "cpu"}
    spec.update(overrides)
    return JobSpec.model_validate(spec)


def codes(spec: JobSpec, shape: DataShape | None = None, device: str = "cpu") -> dict[str, str]:
    plan = plan_job(spec, shape or data_shape(spec.data), device=device)
    return {a.code: a.field for a in plan.advice}


def test_a_sensible_paper_run_has_no_warnings() -> None:
    # lr 5 on the mean loss over 200 samples is the paper's 0.025 on its summed loss: inside its grid.
    assert codes(job(constraint={"radius": 3.0})) == {}


def test_learning_rates_are_compared_with_the_papers_grid_on_its_loss_scale() -> None:
    spec = job(data={"source": "synthetic", "n": 100, "d": 20},
               optim={"name": "gd", "lr_hidden": 0.005, "lr_outer": 80.0, "iterations": 10})
    found = plan_job(spec, data_shape(spec.data), device="cpu").advice
    by_field = {a.field: a.message for a in found if a.code == "lr_vs_loss_scaling"}
    assert set(by_field) == {"optim.lr_hidden", "optim.lr_outer"}
    # 0.005 / 100 samples = 5e-05 < 1e-4; 80 / 100 = 0.8 > 0.5
    assert "5e-05" in by_field["optim.lr_hidden"] and "below its smallest" in by_field["optim.lr_hidden"]
    assert "0.8" in by_field["optim.lr_outer"] and "above its largest" in by_field["optim.lr_outer"]
    assert "multiply its learning rates by 100" in by_field["optim.lr_hidden"]
    # Cross-entropy and deep nets are not the synthetic experiment the grid belongs to.
    deep = job({"arch": "mlp", "hidden": [8, 4]}, optim={"name": "gd", "lr": 0.001, "iterations": 5})
    assert "lr_vs_loss_scaling" not in codes(deep)


@pytest.mark.parametrize("radius, code", [(0.01, "radius_tiny"), (1000.0, "radius_never_binds"), (2.0, None)])
def test_radius_is_judged_against_the_initial_weights_norm(radius: float, code: str | None) -> None:
    # ||W0||_F ~ sqrt(m) = 6.3 for width 40 at LeCun init.
    found = codes(job(constraint={"radius": radius}))
    assert ({code} if code else set()) == found.keys() & {"radius_tiny", "radius_never_binds"}


def test_batch_larger_than_the_data_and_full_batch_epochs() -> None:
    found = codes(job(optim={"name": "sgd", "lr": 5.0, "batch_size": 500, "epochs": 3}))
    assert found["batch_larger_than_data"] == "optim.batch_size"
    assert found["full_batch_epochs"] == "optim.epochs"


def test_width_below_two_n_over_d_and_wide_are_flagged() -> None:
    assert "below_2n_over_d" in codes(job(model={"arch": "shallow", "width": 10}))
    assert "wide" in codes(job(model={"arch": "shallow", "width": 200}))


def test_long_runs_without_checkpoints_bf16_on_cpu_and_relu_are_flagged() -> None:
    found = codes(job(model={"arch": "shallow", "width": 40, "activation": "relu"}, precision="bf16",
                      optim={"name": "gd", "lr": 5.0, "iterations": 20_000}))
    assert {"no_intermediate_checkpoints", "bf16_on_cpu", "relu_outside_theory"} <= found.keys()
    assert "no_intermediate_checkpoints" not in codes(job(optim={"name": "gd", "lr": 5.0, "iterations": 20_000},
                                                          checkpoint_every=1000))


def test_what_the_worker_would_refuse_is_an_error_and_the_counts_are_withheld() -> None:
    tabular = DataShape(100, 0, (12,), 3, "classification")
    resnet = job({"arch": "resnet18", "block4_width": 8}, {"source": "dataset", "id": "x"}, loss="cross_entropy",
                 optim={"name": "sgd", "lr": 0.1, "batch_size": 8, "iterations": 1})
    plan = plan_job(resnet, tabular, device="cpu")
    assert [(a.level, a.code, a.field) for a in plan.advice] == [("error", "would_fail", "model.arch")]
    assert plan.parameters is None and plan.compute is None

    huge = job({"arch": "mlp", "hidden": [16_384, 16_384]}, {"source": "dataset", "id": "x"})
    wide_input = DataShape(100, 0, (1000,), 1, "regression")
    plan = plan_job(huge, wide_input, device="cpu")
    assert plan.advice[0].field == "model.hidden"
    # The same check the worker makes once the data is loaded (trainer/fit.py), with the same message.
    with pytest.raises(DataError) as raised:
        check_model_fits(huge, (1000,), 1)
    assert plan.advice[0].message == raised.value.reason and str(MAX_MLP_PARAMS) in raised.value.reason

    regression = job(loss="cross_entropy", data={"source": "dataset", "id": "x"})
    assert codes(regression, DataShape(10, 0, (3,), 1, "regression")) == {"would_fail": "loss"}


def test_the_jacobian_metric_note_matches_what_the_run_reports() -> None:
    spec = job(model={"arch": "shallow", "width": 4}, data={"source": "digits", "limit": 60},
               loss="cross_entropy")
    assert "no_jacobian_metric" in codes(spec)  # 10 outputs: the metric needs one
    assert load_data(spec.data).output_dim == 10
