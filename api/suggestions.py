"""Close matches for mistyped fields: `lr_hiden` -> "did you mean 'lr_hidden'?", with the fields allowed there.

The allowed names come from the request body models themselves (walked once), keyed by the dotted path of the
object they belong to; members of a tagged union (the model archs, the data sources) share one set of names.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from functools import lru_cache
from typing import Any, get_args

from pydantic import BaseModel

FieldNames = dict[tuple[str, ...], frozenset[str]]


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


@lru_cache
def field_names(models: tuple[type[BaseModel], ...]) -> FieldNames:
    """Allowed field names per object path, over every model reachable from `models`."""
    names: dict[tuple[str, ...], set[str]] = {}

    def walk(model: type[BaseModel], path: tuple[str, ...], seen: frozenset[type[BaseModel]]) -> None:
        if model in seen:
            return
        names.setdefault(path, set()).update(model.model_fields)
        for name, field in model.model_fields.items():
            for sub in _models_in(field.annotation):
                walk(sub, (*path, name), seen | {model})

    for model in models:
        walk(model, (), frozenset())
    return {path: frozenset(found) for path, found in names.items()}


def unknown_field_reason(path: Iterable[str], models: tuple[type[BaseModel], ...], *,
                         list_allowed: bool = True) -> str | None:
    """The reason to give for an unknown field at dotted `path`, or None when its object is not known.
    `list_allowed=False` leaves out the list of allowed names (said once per object is enough)."""
    parts = [p for p in path if not p.isdigit()]  # list indices do not change which object it is
    if not parts:
        return None
    allowed = field_names(models).get(tuple(parts[:-1]))
    if not allowed:
        return None
    close = difflib.get_close_matches(parts[-1], sorted(allowed), n=1, cutoff=0.7)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    listed = f"; allowed here: {', '.join(sorted(allowed))}" if list_allowed else ""
    return f"unknown field{hint}{listed}"
