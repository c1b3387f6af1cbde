"""What every dashboard page shares: the Jinja2 environment, its filters and the static files' location.

Pages are rendered on the server from the same services as the REST routes; the small ES modules under
static/js then keep them live through the JSON API (and /v1/jobs/{id}/events) with the same session.
The filters here have twins of the same names in static/js/format.js, so a row the server rendered and a row a
script updated read the same.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi.templating import Jinja2Templates

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
templates = Jinja2Templates(directory=HERE / "templates")


def fmt_num(value: Any) -> str:
    """4 significant digits; exponent form below 1e-3 and from 1e5 on (as fmtNum in format.js)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "–"
    if value == 0:
        return "0"
    text = f"{value:.3e}" if abs(value) < 1e-3 or abs(value) >= 1e5 else f"{value:.4g}"
    return re.sub(r"e([+-])0*(\d)", r"e\1\2", text)


def fmt_eta(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def fmt_time(value: datetime | None) -> str:
    if value is None:
        return "–"
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.strftime("%Y-%m-%d %H:%M:%S")


def model_summary(spec: dict[str, Any]) -> str:
    """The architecture and its width at a glance: `shallow m=16`, `mlp 64-32`, `resnet18 w=8`."""
    model = spec.get("model") or {}
    arch = str(model.get("arch", "?"))
    if "width" in model:
        return f"{arch} m={model['width']}"
    if isinstance(model.get("hidden"), list):
        return f"{arch} {'-'.join(str(h) for h in model['hidden'])}"
    if "block4_width" in model:
        return f"{arch} w={model['block4_width']}"
    return arch


def run_label(spec: dict[str, Any]) -> dict[str, Any]:
    """What tells compared runs apart: width, radius, learning rate(s)."""
    optim = spec.get("optim") or {}
    lr = optim.get("lr")
    if lr is None and (optim.get("lr_hidden") is not None or optim.get("lr_outer") is not None):
        lr = f"{optim.get('lr_hidden')}/{optim.get('lr_outer')}"
    return {"model": model_summary(spec), "radius": (spec.get("constraint") or {}).get("radius"), "lr": lr}


# The final metrics a sweep's heatmap can show (trainer.grid.METRICS), as the metric selector names them.
METRIC_TITLES = {"train_loss": "final train loss", "test_loss": "final test loss", "train_accuracy": "train accuracy",
                 "test_accuracy": "test accuracy", "w_dist": "‖W − W₀‖ (w_dist)",
                 "jacobian_sigma_min": "σmin(J)", "v_min": "min |v|", "v_ratio": "max |v| / min |v|"}


def as_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True)


templates.env.filters.update(num=fmt_num, eta=fmt_eta, when=fmt_time, model=model_summary, pretty=as_json)
