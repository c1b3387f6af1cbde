"""The job spec: one pydantic model shared by the trainer, its CLI, the API and the worker.

It is stored verbatim on the job row and in every checkpoint, so a run can always be rebuilt from it.
Every field is validated here; a bad spec fails with the offending field named (pydantic's `loc`).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Caps keep a single job inside what one worker can hold; they are generous, not tight.
MAX_WIDTH = 65_536
MAX_INPUT_DIM = 1_000_000
MAX_SAMPLES = 1_000_000
MAX_ITERATIONS = 10_000_000
MAX_EPOCHS = 10_000
MAX_SHALLOW_PARAMS = 50_000_000
MAX_MLP_PARAMS = 50_000_000  # weights of all layers, checked once the input dimension is known
MAX_RESNET_CHANNELS = 16  # input channels
MAX_RESNET_PIXELS = 512 * 512  # H x W of one input image
MAX_RESNET_BATCH = 4096  # one mini-batch's activations must fit a worker
MAX_LR = 100.0

T = TypeVar("T")


def mlp_weight_count(in_features: int, hidden: list[int], out_features: int) -> int:
    """Weights (biases aside) of an MLP with these widths: what MAX_MLP_PARAMS caps."""
    widths = [in_features, *hidden, out_features]
    return sum(a * b for a, b in zip(widths[:-1], widths[1:], strict=True))


Name = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
PositiveFinite = Annotated[float, Field(gt=0, allow_inf_nan=False)]
LearningRate = Annotated[float, Field(gt=0, le=MAX_LR, allow_inf_nan=False)]
Seed = Annotated[int, Field(ge=0, le=2**31 - 1)]
Fraction = Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)]


class StrictModel(BaseModel):
    # Unknown fields are errors: a typo must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)


# ----------------------------------------------------------------------------------------------- model
class ShallowModel(StrictModel):
    """1-hidden-layer net f(x) = sum_j v_j sigma(w_j . x), the paper's (1) and, paired, its (9)."""

    arch: Literal["shallow"] = "shallow"
    width: int = Field(ge=2, le=MAX_WIDTH, description="hidden width m (even in the constrained regime)")
    activation: Literal["tanh", "sigmoid", "softplus", "relu"] = "tanh"


class MLPModel(StrictModel):
    """MLP whose last hidden layer plays the paper's hidden layer (appendix H)."""

    arch: Literal["mlp"]
    hidden: list[Annotated[int, Field(ge=2, le=16_384)]] = Field(min_length=1, max_length=6)
    activation: Literal["relu", "tanh"] = "relu"


class ResNet18Model(StrictModel):
    """ResNet-18; the 4th block's channel count is the narrow width."""

    arch: Literal["resnet18"]
    block4_width: int = Field(default=512, ge=2, le=1024)


ModelSpec = Annotated[ShallowModel | MLPModel | ResNet18Model, Field(discriminator="arch")]


# ------------------------------------------------------------------------------------------------ data
class _Split(StrictModel):
    test_fraction: Fraction = 0.2
    seed: Seed = 0
    standardize: bool = Field(default=True, description="standardize with training-set statistics only")
    random_labels: bool = Field(default=False, description="shuffle training labels (memorization test)")
    limit: int | None = Field(default=None, ge=2, le=MAX_SAMPLES, description="use at most this many samples")


class SyntheticData(StrictModel):
    """The paper's synthetic recipe: x ~ N(0, I_d) normalized to unit norm, labels y ~ N(0, 1)."""

    source: Literal["synthetic"]
    n: int = Field(ge=2, le=MAX_SAMPLES)
    d: int = Field(ge=1, le=10_000)
    seed: Seed = 0
    labels: Literal["gaussian", "teacher"] = "gaussian"
    n_test: int = Field(default=0, ge=0, le=MAX_SAMPLES)


class DigitsData(_Split):
    source: Literal["digits"]


class Mnist5kData(_Split):
    source: Literal["mnist5k"]


class MnistData(_Split):
    """Standard MNIST IDX files under the configured data directory."""

    source: Literal["mnist"]
    test_fraction: Fraction = 0.0  # the IDX files carry their own test split


class CifarData(_Split):
    """CIFAR-10/100 python batches under the configured data directory."""

    source: Literal["cifar10", "cifar100"]
    test_fraction: Fraction = 0.0
    augment: bool = Field(default=False, description="pad-4 random crop and horizontal flip")


class NpzData(_Split):
    """A local .npz file with X, y and optionally X_test, y_test (CLI only; the service uses datasets)."""

    source: Literal["npz"]
    path: str = Field(min_length=1, max_length=4096)


class DatasetRef(_Split):
    """A dataset uploaded to the service (POST /v1/datasets), named by its id or by the name it was uploaded
    with (the service resolves a name to the newest of the user's datasets so named and stores that id)."""

    source: Literal["dataset"]
    id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    name: str | None = Field(default=None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

    @model_validator(mode="after")
    def _named(self) -> DatasetRef:
        if self.id is None and self.name is None:
            raise ValueError("data.id: give the dataset's id or its name")
        return self


DataSpec = Annotated[
    SyntheticData | DigitsData | Mnist5kData | MnistData | CifarData | NpzData | DatasetRef,
    Field(discriminator="source"),
]


# ----------------------------------------------------------------------------------------------- optim
class OptimSpec(StrictModel):
    name: Literal["gd", "sgd", "adam"] = "sgd"
    lr: LearningRate | None = Field(default=None, description="sets both lr_hidden and lr_outer")
    lr_hidden: LearningRate | None = None
    lr_outer: LearningRate | None = None
    momentum: float = Field(default=0.0, ge=0, lt=1, allow_inf_nan=False)
    nesterov: bool = False
    betas: tuple[Fraction, Fraction] = (0.9, 0.999)
    eps: float = Field(default=1e-8, gt=0, le=1, allow_inf_nan=False)
    weight_decay: float = Field(default=0.0, ge=0, le=1, allow_inf_nan=False)
    batch_size: int | None = Field(default=None, ge=1, le=MAX_SAMPLES, description="null = full batch")
    iterations: int | None = Field(default=None, ge=1, le=MAX_ITERATIONS)
    epochs: int | None = Field(default=None, ge=1, le=MAX_EPOCHS)
    schedule: Literal["constant", "cosine", "step"] = "constant"
    milestones: list[Annotated[float, Field(gt=0, lt=1)]] = Field(
        default=[0.3, 0.6, 0.9], max_length=16, description="step schedule: fractions of training"
    )
    step_gamma: float = Field(default=0.1, gt=0, le=1, allow_inf_nan=False)

    @model_validator(mode="after")
    def _resolve(self) -> OptimSpec:
        if self.lr is not None and (self.lr_hidden is not None or self.lr_outer is not None):
            raise ValueError("optim.lr: give either lr or lr_hidden/lr_outer, not both")
        if self.lr is None and (self.lr_hidden is None or self.lr_outer is None):
            raise ValueError("optim.lr: lr (or both lr_hidden and lr_outer) is required")
        if (self.iterations is None) == (self.epochs is None):
            raise ValueError("optim.iterations: give exactly one of iterations or epochs")
        if self.name == "gd" and self.batch_size is not None:
            raise ValueError("optim.batch_size: gd is full-batch; drop batch_size or use sgd")
        if self.nesterov and self.momentum == 0:
            raise ValueError("optim.nesterov: nesterov needs momentum > 0")
        if list(self.milestones) != sorted(self.milestones):
            raise ValueError("optim.milestones: must be increasing")
        return self

    @property
    def hidden_lr(self) -> float:
        return _given(self.lr if self.lr is not None else self.lr_hidden, "optim.lr_hidden")

    @property
    def outer_lr(self) -> float:
        return _given(self.lr if self.lr is not None else self.lr_outer, "optim.lr_outer")

    def total_steps(self, steps_per_epoch: int) -> int:
        """The step budget: `iterations`, or `epochs` passes of steps_per_epoch steps."""
        if self.iterations is not None:
            return self.iterations
        return _given(self.epochs, "optim.epochs") * steps_per_epoch


def _given(value: T | None, field: str) -> T:
    # The validators above guarantee these values; a None here means a spec was built around them.
    if value is None:
        raise ValueError(f"{field}: missing, and the spec's validation requires it")
    return value


class ConstraintSpec(StrictModel):
    """Problem (10): ||W - W0||_F <= radius and v in V = {|v_j| >= zeta, max|v| <= gamma min|v|}.

    Defaults: radius null = unconstrained; zeta and gamma null = V is all of R^{m/2}, so v is never
    projected (the paper reports v never reached the boundary of V, and these cannot bind at init).
    """

    radius: PositiveFinite | None = None
    zeta: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    gamma: float | None = Field(default=None, ge=1, allow_inf_nan=False)


# -------------------------------------------------------------------------------------------------- job
class JobSpec(StrictModel):
    name: Name = "job"
    regime: Literal["regular", "constrained"]
    model: ModelSpec
    data: DataSpec
    loss: Literal["square", "cross_entropy"] = "square"
    optim: OptimSpec
    constraint: ConstraintSpec = ConstraintSpec()
    metrics_every: int = Field(default=100, ge=1, le=MAX_ITERATIONS)
    checkpoint_every: int | None = Field(default=None, ge=1, le=MAX_ITERATIONS)
    jacobian_every: int | None = Field(
        default=None, ge=1, le=MAX_ITERATIONS,
        description="cadence of the Jacobian's smallest singular value (shallow only); null = final step only",
    )
    seed: Seed = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16"] = Field(default="fp32", description="bf16 autocast on CUDA only")

    @model_validator(mode="after")
    def _check(self) -> JobSpec:
        m = self.model
        if isinstance(self.data, SyntheticData) and self.loss != "square":
            raise ValueError("loss: synthetic data is regression, loss must be square")
        if self.regime == "constrained":
            # The pairwise net (9) splits the paired layer into halves (v, -v).
            if isinstance(m, ShallowModel) and m.width % 2:
                raise ValueError(f"model.width: {m.width} must be even in the constrained regime (it pairs neurons)")
            if isinstance(m, MLPModel) and m.hidden[-1] % 2:
                raise ValueError(f"model.hidden: {m.hidden[-1]} must be even in the constrained regime (it pairs "
                                 "the last layer)")
            if isinstance(m, ResNet18Model) and m.block4_width % 2:
                raise ValueError(f"model.block4_width: {m.block4_width} must be even in the constrained regime "
                                 "(it pairs channels)")
        if (self.constraint.zeta is not None or self.constraint.gamma is not None) and self.regime != "constrained":
            raise ValueError("constraint.zeta: zeta and gamma bound the pairwise outer layer (constrained regime only)")
        if isinstance(m, ResNet18Model):
            if isinstance(self.data, SyntheticData):
                raise ValueError("model.arch: resnet18 needs image data; synthetic data is tabular (n, d)")
            # BatchNorm needs more than one sample per batch; a full batch of a real image set would not fit.
            b = self.optim.batch_size
            if b is None or not 2 <= b <= MAX_RESNET_BATCH:
                raise ValueError(f"optim.batch_size: resnet18 trains on mini-batches of 2..{MAX_RESNET_BATCH} images")
        if self.jacobian_every is not None and not isinstance(m, ShallowModel):
            raise ValueError("jacobian_every: the Jacobian metric is computed for arch 'shallow' only")
        if isinstance(m, ShallowModel) and isinstance(self.data, SyntheticData):
            if m.width * self.data.d > MAX_SHALLOW_PARAMS:
                raise ValueError(f"model.width: width x d = {m.width * self.data.d} exceeds {MAX_SHALLOW_PARAMS}")
        return self

    @property
    def radius(self) -> float:
        r = self.constraint.radius
        return math.inf if r is None else r
