"""The Figure-4 heatmap of a sweep's summary (sweep_tables.summarize): one panel per split value, log-scale colour,
the value in every cell, axes labelled by their dotted paths. PNG or SVG.

matplotlib is imported here, on the first heatmap, not when the API starts; only its object-oriented API is used
(no pyplot and its global state), so requests can draw in parallel threads.
"""

from __future__ import annotations

import io
import math
from typing import Any, Literal

ImageFormat = Literal["png", "svg"]
MEDIA_TYPES: dict[str, str] = {"png": "image/png", "svg": "image/svg+xml"}


def _label(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def render(summary: dict[str, Any], fmt: ImageFormat, title: str) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import LogNorm, Normalize
    from matplotlib.figure import Figure

    panels = summary["panels"]
    rows, cols, split = summary["rows"], summary["cols"], summary["split"]
    n_rows, n_cols = len(rows["values"]), len(cols["values"]) if cols else 1
    values = [cell["value"] for panel in panels for line in panel["cells"] for cell in line
              if cell["value"] is not None]
    # Losses span orders of magnitude (1e-13 .. 0.5 in Figure 4): log colour where every value is positive.
    logarithmic = bool(values) and min(values) > 0
    low, high = (min(values), max(values)) if values else (1.0, 1.0)
    if logarithmic:
        norm: Normalize = LogNorm(vmin=low, vmax=high if high > low else low * 10)
    else:
        norm = Normalize(vmin=low, vmax=high if high > low else low + 1)

    fig = Figure(figsize=(1.8 + 1.1 * n_cols * len(panels), 1.4 + 0.5 * n_rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    image = None
    for ax, panel in zip(axes, panels, strict=True):
        grid = [[math.nan if cell["value"] is None else cell["value"] for cell in line] for line in panel["cells"]]
        image = ax.imshow(grid, norm=norm, cmap="viridis", aspect="auto")
        for i, line in enumerate(panel["cells"]):
            for j, cell in enumerate(line):
                value = cell["value"]
                text = "n/a" if value is None else f"{value:.2e}"
                color = "gray" if value is None else "black" if float(norm(value)) > 0.5 else "white"
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color=color)
        ax.set_yticks(range(n_rows), [_label(v) for v in rows["values"]])
        ax.set_ylabel(rows["axis"])
        if cols:
            ax.set_xticks(range(n_cols), [_label(v) for v in cols["values"]])
            ax.set_xlabel(cols["axis"])
        else:
            ax.set_xticks([])
        if split:
            ax.set_title(f"{split['axis']} = {_label(panel['split'])}", fontsize=9)
    if image is not None:
        fig.colorbar(image, ax=list(axes), shrink=0.9)
    fig.suptitle(title, fontsize=10)
    out = io.BytesIO()
    fig.savefig(out, format=fmt, dpi=110)
    return out.getvalue()
