"""Where a net's width sits relative to the paper's range: Theorem 1 needs m >= 2n/d; narrow is 2n/d <= m < n."""

from __future__ import annotations

from pydantic import BaseModel, Field

from trainer.plan.layers import Net
from trainer.plan.shapes import DataShape
from trainer.spec import JobSpec, MLPModel, ResNet18Model

BELOW = "below 2n/d: Theorem 1 does not apply"
NARROW = "narrow: 2n/d <= m < n"
WIDE = "wide: m >= n"


class WidthPosition(BaseModel):
    layer: str = Field(description="the layer that plays the paper's hidden layer")
    n: int = Field(description="training samples")
    d: int = Field(description="input features of that layer")
    m: int = Field(description="its units")
    two_n_over_d: float
    verdict: str = Field(description=f"'{BELOW}', '{NARROW}' or '{WIDE}'")
    counted_as: str


def verdict(n: int, d: int, m: int) -> str:
    if m >= n:
        return WIDE
    return NARROW if m * d >= 2 * n else BELOW  # m >= 2n/d, in integers


def width_position(spec: JobSpec, shape: DataShape, net: Net) -> WidthPosition:
    if isinstance(spec.model, ResNet18Model):
        layer = "block 4 (model.block4_width)"
    elif isinstance(spec.model, MLPModel):
        layer = "the last hidden layer (model.hidden[-1])"
    else:
        layer = "the hidden layer (model.width)"
    n, d, m = shape.n_train, net.hidden_inputs, net.hidden_units
    return WidthPosition(layer=layer, n=n, d=d, m=m, two_n_over_d=2 * n / d, verdict=verdict(n, d, m),
                         counted_as=net.counted_as)
