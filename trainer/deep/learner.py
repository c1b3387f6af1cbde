"""The deep nets' learner: an nn.Module trained by autograd and torch.optim, one job (C = 1) at a time.

It exposes the interface trainer.loop.train() drives for every architecture (the same as ShallowLearner's):
total_steps, steps_per_epoch, step(step), evaluate(jacobian) -> {name: (1,) tensor}, state_tensors(config),
load_state_tensors(tensors, config), with its one config at position 0. Everything random in a step is a pure
function of (seed, epoch) for the batch order and (seed, step) for augmentation, so a run resumed from a
checkpoint is bit-for-bit the uninterrupted run on CPU.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import Tensor

from trainer.checkpoint import CheckpointError
from trainer.data import Dataset, augment_batch
from trainer.deep.ball import distance_from, project_block_onto_ball_
from trainer.deep.models import build_model, named_block_parameters
from trainer.deep.optim_state import PREFIX as OPT
from trainer.deep.optim_state import flatten_optimizer_state, load_optimizer_state
from trainer.fit import check_loss_fits
from trainer.losses import loss_value
from trainer.metrics import outer_weight_stats
from trainer.projection import project_onto_v_set
from trainer.schedule import lr_factor
from trainer.shallow.learner import batch_seed
from trainer.sizes import EVAL_BATCH
from trainer.spec import CifarData, JobSpec, ResNet18Model
from trainer.steps import epoch_steps, total_steps

MODEL, INIT = "model.", "init."
V_PROJECTED = "v_projected_steps"  # checkpoint key of the P_V binding count


def augment_seed(seed: int, step: int) -> int:
    # Augmentation of step s is a pure function of (seed, s), like the batch order, so resuming replays it.
    return (seed * 2_000_029 + step * 104_729 + 54_321) % (2**63 - 1)


class DeepLearner:
    def __init__(self, spec: JobSpec, data: Dataset, device: torch.device) -> None:
        self.spec, self.device = spec, device
        self.loss = spec.loss
        self.classification = data.task == "classification"
        check_loss_fits(spec, self.classification)
        self.model = build_model(spec, data.input_shape, data.output_dim).to(device)
        self.cuda = device.type == "cuda"
        self.is_resnet = isinstance(spec.model, ResNet18Model)
        if self.cuda and self.is_resnet:
            self.model = self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs omit it
        self.autocast = spec.precision == "bf16" and self.cuda

        # Data stays on the host; each batch is gathered there and copied (pinned, non-blocking on CUDA).
        self.X, self.X_test = data.X_train, data.X_test
        self.k = data.output_dim
        self.Y = self._targets(data.y_train)
        self.Y_test = self._targets(data.y_test)
        self.labels = data.y_train if self.classification else None
        self.labels_test = data.y_test if self.classification else None
        self.n = data.n_train
        self.augment = isinstance(spec.data, CifarData) and spec.data.augment
        o = spec.optim
        self.steps_per_epoch = epoch_steps(spec, self.n)
        self.total_steps = total_steps(spec, self.n)
        self._epoch_perm: tuple[int, Tensor] | None = None

        # The projected block: the paper's hidden layer W (MLP: last hidden layer; ResNet: block 4).
        block = named_block_parameters(self.model, self.model.projected_block())
        self.block_names = [name for name, _ in block]
        self.block = [p for _, p in block]
        self.block_init = [p.detach().clone() for p in self.block]
        self.radius = spec.radius
        self._scratch = [torch.empty_like(p) for p in self.block] if math.isfinite(self.radius) else None
        self.pairwise = spec.regime == "constrained"
        c = spec.constraint
        self.project_v = self.pairwise and (c.zeta is not None or c.gamma is not None)
        self.zeta, self.gamma = c.zeta or 0.0, (c.gamma if c.gamma is not None else math.inf)
        # Steps at which P_V moved v: how often the V constraint binds (the paper says never).
        self.v_projected = torch.zeros(1, dtype=torch.int64, device=device)

        self.param_names = {id(p): name for name, p in self.model.named_parameters()}
        outer = list(self.model.out.parameters())
        outer_ids = {id(p) for p in outer}
        hidden = [p for p in self.model.parameters() if id(p) not in outer_ids]
        # lr_hidden for every layer below the output, lr_outer for the output layer (the paper's eta_W, eta_v).
        groups = [{"params": hidden, "lr": o.hidden_lr}, {"params": outer, "lr": o.outer_lr}]
        self.base_lrs = [o.hidden_lr, o.outer_lr]
        if o.name == "adam":
            self.opt: torch.optim.Optimizer = torch.optim.Adam(groups, betas=o.betas, eps=o.eps,
                                                               weight_decay=o.weight_decay)
        else:
            self.opt = torch.optim.SGD(groups, momentum=o.momentum, nesterov=o.nesterov, weight_decay=o.weight_decay)

    def _targets(self, y: Tensor) -> Tensor:
        if self.classification and self.loss == "square":
            return torch.nn.functional.one_hot(y, self.k).to(torch.float32)  # square loss on one-hot
        return y

    def _to_device(self, t: Tensor) -> Tensor:
        return t.pin_memory().to(self.device, non_blocking=True) if self.cuda else t

    def _inputs_to_device(self, X: Tensor) -> Tensor:
        X = self._to_device(X)
        return X.contiguous(memory_format=torch.channels_last) if self.cuda and self.is_resnet else X

    def _autocast(self) -> contextlib.AbstractContextManager[None]:
        if self.autocast:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # ------------------------------------------------------------------------------------------ training step
    def _batch(self, step: int) -> tuple[Tensor, Tensor]:
        if self.steps_per_epoch == 1 and self.spec.optim.batch_size is None:
            return self.X, self.Y
        b = self.spec.optim.batch_size or self.n
        epoch, pos = divmod(step, self.steps_per_epoch)
        if self._epoch_perm is None or self._epoch_perm[0] != epoch:
            g = torch.Generator().manual_seed(batch_seed(self.spec.seed, epoch))
            self._epoch_perm = (epoch, torch.randperm(self.n, generator=g))
        idx = self._epoch_perm[1][pos * b:(pos + 1) * b]
        return self.X[idx], self.Y[idx]

    def step(self, step: int) -> None:
        """One optimizer step (0-based index `step`), then the projections of problem (10)."""
        o = self.spec.optim
        X, Y = self._batch(step)
        X, Y = self._inputs_to_device(X), self._to_device(Y)
        if self.augment:
            # Random draws on a CPU generator: the same crops and flips on any device.
            X = augment_batch(X, torch.Generator().manual_seed(augment_seed(self.spec.seed, step)))
        factor = lr_factor(o.schedule, step, self.total_steps, o.milestones, o.step_gamma)
        for group, base in zip(self.opt.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * factor
        self.model.train()
        with self._autocast():
            out = self.model(X)
        loss = loss_value(out.float()[None], Y, self.loss)[0]
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if math.isfinite(self.radius):
            project_block_onto_ball_(self.block, self.block_init, self.radius, self._scratch)  # (10): ||W-W0|| <= r
        if self.project_v:
            with torch.no_grad():
                v = self.model.out.weight
                projected = project_onto_v_set(v[None], self.zeta, self.gamma)[0]  # (10): v in V
                self.v_projected += (projected != v).any().long()
                v.copy_(projected)

    # -------------------------------------------------------------------------------------------- metrics
    @torch.no_grad()
    def _loss_and_accuracy(self, X: Tensor, Y: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Mean loss and accuracy over a whole set, in eval mode (BatchNorm running statistics), batched."""
        size = EVAL_BATCH[self.spec.model.arch]
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        for start in range(0, len(X), size):
            xb, yb = self._inputs_to_device(X[start:start + size]), self._to_device(Y[start:start + size])
            with self._autocast():
                out = self.model(xb).float()
            total += loss_value(out[None], yb, self.loss)[0].double() * len(xb)
            if labels is not None:
                lab = yb if labels is Y else self._to_device(labels[start:start + size])
                correct += (out.argmax(dim=1) == lab).sum()
        n = max(len(X), 1)
        return (total / n).float(), (correct.double() / n).float() if labels is not None else None

    @torch.no_grad()
    def evaluate(self, jacobian: bool = False) -> dict[str, Tensor]:
        """Metrics as (1,) tensors (the loop's shape for one config); `jacobian` is for shallow nets only."""
        was_training = self.model.training
        self.model.eval()
        out: dict[str, Tensor] = {}
        out["train_loss"], acc = self._loss_and_accuracy(self.X, self.Y, self.labels)
        if acc is not None:
            out["train_accuracy"] = acc
        if len(self.X_test):
            out["test_loss"], acc = self._loss_and_accuracy(self.X_test, self.Y_test, self.labels_test)
            if acc is not None:
                out["test_accuracy"] = acc
        out["w_dist"] = distance_from(self.block, self.block_init).float()
        if self.pairwise:
            out["v_min"], out["v_ratio"] = (t[0] for t in outer_weight_stats(self.model.out.weight[None]))
        if self.project_v:
            out["v_projected_steps"] = self.v_projected
        self.model.train(was_training)
        return {k: v.reshape(1) for k, v in out.items()}

    # ------------------------------------------------------------------------------------------ state I/O
    def state_tensors(self, config: int = 0) -> dict[str, Tensor]:
        """Everything a resume needs: parameters and buffers (BatchNorm statistics), the block's initial values,
        and the optimizer state."""
        state = {MODEL + k: t for k, t in self.model.state_dict().items()}
        state.update({INIT + name: t for name, t in zip(self.block_names, self.block_init, strict=True)})
        state.update(flatten_optimizer_state(self.opt, self.param_names))
        if self.project_v:
            state[V_PROJECTED] = self.v_projected
        return state

    def load_state_tensors(self, tensors: dict[str, Tensor], config: int = 0) -> None:
        expected = {k for k in self.state_tensors() if not k.startswith(OPT) and k != V_PROJECTED}
        missing = expected - set(tensors)
        if missing:
            raise CheckpointError(f"checkpoint lacks tensors {sorted(missing)[:5]}")
        own = self.model.state_dict()
        for key, target in [*((MODEL + k, t) for k, t in own.items()),
                            *((INIT + n, t) for n, t in zip(self.block_names, self.block_init, strict=True))]:
            if tuple(tensors[key].shape) != tuple(target.shape):
                raise CheckpointError(f"tensor {key}: shape {tuple(tensors[key].shape)} != {tuple(target.shape)}")
        try:
            self.model.load_state_dict({k[len(MODEL):]: t for k, t in tensors.items() if k.startswith(MODEL)})
        except RuntimeError as e:  # unexpected keys: a checkpoint of another architecture
            raise CheckpointError(f"checkpoint does not fit this model: {e}") from e
        for t, name in zip(self.block_init, self.block_names, strict=True):
            t.copy_(tensors[INIT + name])
        load_optimizer_state(self.opt, self.param_names, tensors)
        if self.project_v:
            # A diagnostic count, not training state: a checkpoint written before it existed restarts it at 0.
            self.v_projected.copy_(tensors.get(V_PROJECTED, torch.zeros(1, dtype=torch.int64)))
