"""What a researcher wants to hear before spending GPU hours on a spec: what would fail, and what is probably not
what was meant."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel

from trainer.data.errors import DataError
from trainer.fit import check_loss_fits, check_model_fits
from trainer.plan.layers import Net
from trainer.plan.shapes import DataShape
from trainer.plan.width import BELOW, WIDE, verdict
from trainer.sizes import JACOBIAN_MAX_SAMPLES
from trainer.spec import JobSpec, ShallowModel
from trainer.steps import rows_per_step, total_steps

PAPER_LR_GRID = (1e-4, 0.5)  # the synthetic experiment's learning rates, for its summed loss (2)
TINY_RADIUS = 0.01  # r below this fraction of ||W0||_F: W can hardly move
LOOSE_RADIUS = 10.0  # r above this multiple of ||W0||_F: the ball is unlikely ever to bind
LONG_RUN_STEPS = 10_000  # past this, a run without intermediate checkpoints is costly to lose


class Advice(BaseModel):
    level: Literal["error", "warning", "info"]  # error: the run would fail
    code: str
    field: str
    message: str


def initial_block_norm(net: Net) -> float:
    """E||W0||_F of the hidden layer at LeCun init: a weight of shape (out, in, ...) ~ N(0, 1/fan_in) adds `out` to
    the expected squared norm; BatchNorm scales start at 1, biases at 0. Mirroring copies rows, keeping this."""
    return math.sqrt(sum(t.shape[0] for t in net.block_params if t.name == "W" or t.name.endswith("weight")))


def _loss_scaling(spec: JobSpec, shape: DataShape) -> list[Advice]:
    if not isinstance(spec.model, ShallowModel) or spec.loss != "square":
        return []
    rows = rows_per_step(spec, shape.n_train)
    low, high = PAPER_LR_GRID
    out = []
    for field, lr in (("optim.lr_hidden", spec.optim.hidden_lr), ("optim.lr_outer", spec.optim.outer_lr)):
        paper = lr / rows
        if low <= paper <= high:
            continue
        side = f"below its smallest, {low:g}" if paper < low else f"above its largest, {high:g}"
        out.append(Advice(
            level="warning", code="lr_vs_loss_scaling", field=field,
            message=f"{field} = {lr:g} acts on our mean loss 1/(2n) sum_i (f(x_i) - y_i)^2, the paper's (2) is the "
                    f"sum 1/2 sum_i (reconstructed): with {rows:g} samples a step here is the paper's step with lr "
                    f"{paper:.3g}, {side} of its grid [{low:g}, {high:g}]. To take the paper's steps, multiply its "
                    f"learning rates by {rows:g}"))
    return out


def _radius(spec: JobSpec, net: Net) -> list[Advice]:
    r = spec.constraint.radius
    if r is None:
        return []
    norm = initial_block_norm(net)
    if r < TINY_RADIUS * norm:
        return [Advice(level="warning", code="radius_tiny", field="constraint.radius",
                       message=f"r = {r:g} is {r / norm:.2g} of ||W0||_F ~ {norm:.3g}: the hidden layer can hardly "
                               "move from its initialization, so in effect only the outer layer trains")]
    if r > LOOSE_RADIUS * norm:
        return [Advice(level="warning", code="radius_never_binds", field="constraint.radius",
                       message=f"r = {r:g} is {r / norm:.3g} times ||W0||_F ~ {norm:.3g}: the ball is unlikely ever "
                               "to bind, so this is in effect the unconstrained run (radius null says so directly)")]
    return []


def _fit(spec: JobSpec, shape: DataShape) -> list[Advice]:
    try:
        check_loss_fits(spec, shape.task == "classification")
        check_model_fits(spec, shape.sample_shape, shape.outputs)
    except DataError as exc:
        return [Advice(level="error", code="would_fail", field=exc.field, message=exc.reason)]
    return []


def advise(spec: JobSpec, shape: DataShape, net: Net | None, *, device: str) -> list[Advice]:
    """Advice on the spec for data of this shape; `net` is None when the model does not fit the data."""
    out = _fit(spec, shape)
    if net is None or out:  # the run would fail: that is all there is to say
        return out
    n, d, m = shape.n_train, net.hidden_inputs, net.hidden_units
    where = verdict(n, d, m)
    if where == BELOW:
        out.append(Advice(level="warning", code="below_2n_over_d", field="model",
                          message=f"m = {m} < 2n/d = {2 * n / d:.4g}: Theorem 1 does not apply, a zero-loss "
                                  "solution near the mirrored initialization is not guaranteed to exist"))
    elif where == WIDE:
        out.append(Advice(level="info", code="wide", field="model",
                          message=f"m = {m} >= n = {n}: wide, not the narrow range 2n/d <= m < n the paper studies"))
    out += _loss_scaling(spec, shape)
    out += _radius(spec, net)
    b = spec.optim.batch_size
    if b is not None and b > n:
        out.append(Advice(level="warning", code="batch_larger_than_data", field="optim.batch_size",
                          message=f"batch_size {b} > the {n} training samples: every step is a full batch"))
    if spec.optim.epochs is not None and (b is None or b >= n):
        out.append(Advice(level="info", code="full_batch_epochs", field="optim.epochs",
                          message=f"full batch: each of the {spec.optim.epochs} epochs is a single step"))
    model = spec.model
    if isinstance(model, ShallowModel) and model.activation == "relu" and spec.regime == "constrained":
        out.append(Advice(level="info", code="relu_outside_theory", field="model.activation",
                          message="Theorem 1 assumes a smooth activation (tanh, sigmoid, softplus); ReLU is allowed "
                                  "in practice, not by the theory"))
    if isinstance(model, ShallowModel) and (shape.outputs != 1 or n > JACOBIAN_MAX_SAMPLES):
        out.append(Advice(level="info", code="no_jacobian_metric", field="model",
                          message=f"jacobian_sigma_min is computed for one output and n <= {JACOBIAN_MAX_SAMPLES} "
                                  "only; this run will not report it"))
    if spec.precision == "bf16" and device != "cuda":
        out.append(Advice(level="warning", code="bf16_on_cpu", field="precision",
                          message="bf16 autocast applies on CUDA only; on the CPU this job runs in fp32"))
    if spec.checkpoint_every is None and total_steps(spec, n) > LONG_RUN_STEPS:
        out.append(Advice(level="warning", code="no_intermediate_checkpoints", field="checkpoint_every",
                          message=f"{total_steps(spec, n)} steps and no checkpoint_every: a run whose worker is lost "
                                  "starts again from step 0"))
    return out
