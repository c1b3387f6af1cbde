"""The sweep file: a base job spec, a grid of dotted paths into it, and an objective; one format for the local
`narrownet sweep` and for POST /v1/sweeps.

    {"name": "figure4",
     "base": {...a job spec...},
     "grid": {"regime": ["regular", "constrained"], "model.width": [10, 20], "optim.lr_hidden": [0.01, 0.1]},
     "objective": {"metric": "train_loss", "mode": "min"}}

The sweep is the cartesian product of the grid's values (the last axis varies fastest) applied to the base; every
config must validate as a job spec. Errors name the axis, the value's index, the value and the reason:
`grid.model.width[1]: 21 must be even in the constrained regime (it pairs neurons)`. No torch here: the API
expands and validates grids too.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, ValidationError

from trainer.spec import JobSpec, StrictModel

MAX_CONFIGS = 4096  # the engine's own bound; the service caps lower (NARROWNET_MAX_SWEEP_CONFIGS)
MAX_AXES = 16
MAX_VALUES = 256
MAX_ERRORS = 50  # a grid of thousands of bad configs answers with the first errors, not megabytes
MetricName = Literal["train_loss", "test_loss", "train_accuracy", "test_accuracy", "w_dist", "v_min", "v_ratio",
                     "jacobian_sigma_min"]
METRICS: tuple[str, ...] = typing.get_args(MetricName)
LR_AXES = ("optim.lr_hidden", "optim.lr_outer")
# Switching a section's variant (model.arch, data.source) is what makes its other fields wrong.
DISCRIMINATORS = {"model": "model.arch", "data": "data.source"}
# The old local format, {"base": spec, "lr_hidden": [...], ...}: still read by `narrownet sweep`.
LEGACY_AXES = {"lr_hidden": "optim.lr_hidden", "lr_outer": "optim.lr_outer", "radius": "constraint.radius",
               "seed": "seed"}

SweepName = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
FieldError = tuple[str, str]  # (dotted field, reason), as the API reports them


class GridError(ValueError):
    """The sweep cannot be expanded: one (field, reason) per problem, fields as `grid.<axis>[<index>]`."""

    def __init__(self, fields: Sequence[FieldError]) -> None:
        self.fields = list(fields)
        super().__init__("; ".join(f"{f}: {r}" for f, r in self.fields))


class Objective(StrictModel):
    metric: MetricName = "train_loss"
    mode: Literal["min", "max"] = "min"


class SweepFile(StrictModel):
    name: SweepName | None = Field(default=None, description="default: the base's name")
    base: JobSpec
    grid: dict[str, list[Any]] = Field(description="dotted path into the job spec -> the values to try")
    objective: Objective = Objective()

    @property
    def sweep_name(self) -> str:
        return self.name or self.base.name[:100]

    @property
    def axes(self) -> list[str]:
        return list(self.grid)


@dataclass(frozen=True)
class GridConfig:
    index: int
    params: dict[str, Any]  # axis -> the value as given in the grid
    spec: JobSpec


def _leaf_fields(model: type[BaseModel]) -> dict[str, Any]:
    return {name: field.annotation for name, field in model.model_fields.items()}


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation admits (through Annotated, unions and Optional)."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _models_in(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]
    return [annotation] if isinstance(annotation, type) and issubclass(annotation, BaseModel) else []


def allowed_axes() -> list[str]:
    """Every leaf of the job spec a grid may vary: top-level fields and the fields of each section's variants."""
    axes: set[str] = set()
    for name, annotation in _leaf_fields(JobSpec).items():
        models = _models_in(annotation)
        if not models:
            axes.add(name)
        for model in models:
            axes.update(f"{name}.{leaf}" for leaf in model.model_fields)
    axes.discard("name")  # each config is named after the sweep
    return sorted(axes)


AXES = frozenset(allowed_axes())


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _check_grid(grid: Mapping[str, list[Any]], max_configs: int) -> None:
    errors: list[FieldError] = []
    if not grid:
        errors.append(("grid", "give at least one axis, e.g. {\"optim.lr_hidden\": [0.01, 0.1]}"))
    if len(grid) > MAX_AXES:
        errors.append(("grid", f"{len(grid)} axes, more than {MAX_AXES}"))
    for axis, values in grid.items():
        if axis not in AXES:
            errors.append((f"grid.{axis}", f"unknown axis; allowed: {', '.join(sorted(AXES))}"))
            continue
        if not values:
            errors.append((f"grid.{axis}", "give at least one value"))
        if len(values) > MAX_VALUES:
            errors.append((f"grid.{axis}", f"{len(values)} values, more than {MAX_VALUES}"))
        seen: dict[str, int] = {}
        for i, value in enumerate(values):
            if (first := seen.setdefault(_canonical(value), i)) != i:
                errors.append((f"grid.{axis}[{i}]", f"{_canonical(value)} repeats grid.{axis}[{first}]"))
    if errors:
        raise GridError(errors)
    n = math.prod(len(v) for v in grid.values())
    if n > max_configs:
        raise GridError([("grid", f"{n} configs ({' x '.join(str(len(v)) for v in grid.values())}), more than "
                                  f"the {max_configs} a sweep may have")])


def _set(body: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = body
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = copy.deepcopy(value)


def _base_body(base: JobSpec, axes: Iterable[str]) -> dict[str, Any]:
    """The base as the user wrote it, with the learning rates split or joined to suit the grid's axes."""
    body = base.model_dump(mode="json", exclude_unset=True)
    optim = body.get("optim", {})
    axes = set(axes)
    if axes & set(LR_AXES) and optim.get("lr") is not None:
        # A grid over lr_hidden (or lr_outer) with a base that gives one `lr`: that lr is the other rate.
        lr = optim.pop("lr")
        optim.setdefault("lr_hidden", lr)
        optim.setdefault("lr_outer", lr)
    if "optim.lr" in axes:
        optim.pop("lr_hidden", None)
        optim.pop("lr_outer", None)
    return body


def _error_field(error: Mapping[str, Any], body: Any) -> tuple[str, str]:
    """(dotted field, reason) of one pydantic error on a config body; model validators name the field in
    their message ("model.width: ..."), field validators through `loc` (tags of discriminated unions dropped)."""
    message = str(error.get("msg", "invalid value"))
    if error.get("type") == "value_error":
        text = message.removeprefix("Value error, ")
        field, sep, reason = text.partition(": ")
        if sep and all(part.isidentifier() for part in field.split(".")):
            return field, reason
    parts: list[str] = []
    node = body
    for item in error.get("loc", ()):
        if isinstance(node, dict) and isinstance(item, str) and item not in node and item in {
                v for v in node.values() if isinstance(v, str)}:
            continue  # the union tag
        parts.append(str(item))
        node = node.get(item) if isinstance(node, dict) else None
    return ".".join(parts) or "spec", message


def _blame(field: str, params: Mapping[str, Any], values_index: Mapping[str, int], reason: str) -> FieldError:
    """Attribute an error on a config to the grid value that caused it, else to the config as a whole."""
    related = [a for a in params if field == a or field.startswith(f"{a}.") or a.startswith(f"{field}.")]
    discriminator = DISCRIMINATORS.get(field.split(".")[0])
    for axis in [*related, *([discriminator] if discriminator in params else [])]:
        if axis is not None:
            value = _canonical(params[axis])
            about = reason if field == axis else f"{field}: {reason}"
            text = about if value in about else f"{value} is invalid: {about}"
            return f"grid.{axis}[{values_index[axis]}]", text
    return "grid", f"the config {_canonical(dict(params))} is invalid: {field}: {reason}"


def expand(sweep: SweepFile, *, max_configs: int = MAX_CONFIGS) -> list[GridConfig]:
    """Every config of the sweep, validated; GridError names each bad axis value (or config) and why."""
    grid = sweep.grid
    _check_grid(grid, min(max_configs, MAX_CONFIGS))
    base = _base_body(sweep.base, grid)
    axes = list(grid)
    configs: list[GridConfig] = []
    errors: dict[FieldError, None] = {}
    name = sweep.sweep_name
    for index, choice in enumerate(itertools.product(*(range(len(grid[a])) for a in axes))):
        params = {axis: grid[axis][i] for axis, i in zip(axes, choice, strict=True)}
        body = copy.deepcopy(base)
        for axis, value in params.items():
            _set(body, axis, value)
        body["name"] = f"{name}-{index}"
        try:
            configs.append(GridConfig(index, params, JobSpec.model_validate(body)))
        except ValidationError as e:
            where = dict(zip(axes, choice, strict=True))
            for err in e.errors():
                field, reason = _error_field(err, body)
                errors.setdefault(_blame(field, params, where, reason), None)
            if len(errors) >= MAX_ERRORS:
                break
    if errors:
        raise GridError(list(errors)[:MAX_ERRORS])
    return configs


def parse_sweep_file(obj: Any) -> SweepFile:
    """A sweep file as JSON data; the old local format {"base", "lr_hidden", "lr_outer", "radius", "seed"} is
    read as the grid over those four axes."""
    if isinstance(obj, dict) and "grid" not in obj and LEGACY_AXES.keys() & obj.keys():
        legacy = dict(obj)
        # The old format wrote every list, an absent one as null (the base's value): no axis.
        values = {k: legacy.pop(k) for k in list(legacy) if k in LEGACY_AXES}
        obj = {**legacy, "grid": {LEGACY_AXES[k]: v for k, v in values.items() if v is not None}}
    return SweepFile.model_validate(obj)


def metric_value(metrics: Mapping[str, Any] | None, metric: str) -> float | None:
    """A finite metric value, or None (missing, null, or not finite)."""
    value = (metrics or {}).get(metric)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)
