"""Algorithm 2 for C configs at once: the shallow net's training state and one (projected) step.

Every tensor carries a leading config dimension C; a single job is C = 1, and a pack of a sweep's configs stacks
them into C. Configs share data, shapes and the spec's other settings (trainer/packing.py); they differ in
lr_hidden, lr_outer, radius and seed. Each config's arithmetic does not depend on the others (see Workspace), so on
one thread a config ends bit for bit where it ends alone, and configs can leave a pack mid-run (keep_configs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from trainer.checkpoint import CheckpointError
from trainer.data import Dataset
from trainer.fit import check_loss_fits, check_model_fits
from trainer.init import init_batch
from trainer.losses import accuracy, loss_and_grad, loss_value
from trainer.metrics import jacobian_sigma_min, outer_weight_stats
from trainer.optim import adam_step_, sgd_step_
from trainer.projection import project_onto_ball_, project_onto_v_set
from trainer.schedule import lr_factor
from trainer.shallow.net import Workspace, backward, features, outer_weights, outputs
from trainer.spec import JobSpec, ShallowModel
from trainer.steps import steps_per_epoch, total_steps


@dataclass(frozen=True)
class ConfigGrid:
    """Per-config hyperparameters, each a list of length C."""

    lr_hidden: list[float]
    lr_outer: list[float]
    radius: list[float]  # math.inf = unconstrained
    seed: list[int]

    @classmethod
    def single(cls, spec: JobSpec) -> ConfigGrid:
        return cls.of([spec])

    @classmethod
    def of(cls, specs: Sequence[JobSpec]) -> ConfigGrid:
        """The per-config settings of specs that share everything else (trainer.packing.pack_key)."""
        return cls([s.optim.hidden_lr for s in specs], [s.optim.outer_lr for s in specs], [s.radius for s in specs],
                   [s.seed for s in specs])

    def subset(self, keep: Sequence[int]) -> ConfigGrid:
        return ConfigGrid([self.lr_hidden[i] for i in keep], [self.lr_outer[i] for i in keep],
                          [self.radius[i] for i in keep], [self.seed[i] for i in keep])

    def __len__(self) -> int:
        return len(self.seed)


# Elements per activation buffer in one forward/backward group (~4 MB of float32): sized to the caches, not RAM.
CHUNK_ELEMENTS = 1 << 20
V_PROJECTED = "v_projected_steps"  # checkpoint key of the P_V binding count
# float64 elements of the Jacobian metric's n x n Gram matrices (and (n, m) factors) computed at once (128 MB).
JACOBIAN_ELEMENTS = 1 << 24


def batch_seed(seed: int, epoch: int) -> int:
    # Batch order is a pure function of (seed, epoch): a resumed run draws the same batches as an uninterrupted one.
    return (seed * 1_000_003 + epoch * 7_919 + 12_345) % (2**63 - 1)


class ShallowLearner:
    def __init__(self, spec: JobSpec, data: Dataset, grid: ConfigGrid, device: torch.device) -> None:
        if not isinstance(spec.model, ShallowModel):
            raise TypeError("ShallowLearner trains arch 'shallow' only")
        self.spec, self.grid, self.device = spec, grid, device
        self.width = spec.model.width
        self.activation = spec.model.activation
        self.pairwise = spec.regime == "constrained"
        self.loss = spec.loss
        self.classification = data.task == "classification"
        self.X = data.X_train.flatten(1).to(device)
        self.X_test = data.X_test.flatten(1).to(device)
        self.labels = data.y_train.to(device) if self.classification else None
        self.labels_test = data.y_test.to(device) if self.classification else None
        self.k = data.output_dim
        self.Y = self._targets(data.y_train).to(device)
        self.Y_test = self._targets(data.y_test).to(device)
        self.n, self.d = self.X.shape
        check_loss_fits(spec, self.classification)
        check_model_fits(spec, (self.d,), self.k)
        self.total_steps = total_steps(spec, self.n)
        self.steps_per_epoch = steps_per_epoch(self.n, spec.optim.batch_size)

        C = len(grid)
        shape = (C, 1, 1)
        self.lr_hidden = torch.tensor(grid.lr_hidden, dtype=torch.float32, device=device).view(shape)
        self.lr_outer = torch.tensor(grid.lr_outer, dtype=torch.float32, device=device).view(shape)
        self.radius = torch.tensor(grid.radius, dtype=torch.float64, device=device)
        self.project_w = any(math.isfinite(r) for r in grid.radius)
        c = spec.constraint
        self.project_v = self.pairwise and (c.zeta is not None or c.gamma is not None)
        self.zeta = c.zeta or 0.0
        self.gamma = c.gamma if c.gamma is not None else math.inf
        # Steps at which P_V moved v, per config: how often the V constraint binds (the paper says never).
        self.v_projected = torch.zeros(C, dtype=torch.int64, device=device)

        W, v = init_batch(spec.regime, self.width, self.d, self.k, grid.seed)
        self.W, self.v = W.to(device), v.to(device)
        self.W0 = self.W.clone()
        self.opt: dict[str, Tensor] = {}
        o = spec.optim
        if o.name == "adam":
            for name, p in (("W", self.W), ("v", self.v)):
                self.opt[f"{name}.exp_avg"] = torch.zeros_like(p)
                self.opt[f"{name}.exp_avg_sq"] = torch.zeros_like(p)
        elif o.momentum > 0:
            self.opt["W.momentum"] = torch.zeros_like(self.W)
            self.opt["v.momentum"] = torch.zeros_like(self.v)
        self._epoch_index: tuple[int, Tensor] | None = None
        self._workspace = Workspace()

    def keep_configs(self, keep: Sequence[int]) -> None:
        """Drop every config but those at positions `keep` (in that order): a pack goes on without the configs
        that diverged, were cancelled or changed hands. The others' arithmetic is unchanged."""
        index = torch.tensor(list(keep), dtype=torch.long, device=self.device)
        self.grid = self.grid.subset(keep)
        for name in ("W", "v", "W0", "lr_hidden", "lr_outer", "radius", "v_projected"):
            setattr(self, name, getattr(self, name).index_select(0, index))
        self.opt = {k: t.index_select(0, index) for k, t in self.opt.items()}
        self.project_w = any(math.isfinite(r) for r in self.grid.radius)
        if self._epoch_index is not None:
            self._epoch_index = (self._epoch_index[0], self._epoch_index[1].index_select(0, index))
        self._workspace = Workspace()  # buffers sized for the old C

    def _targets(self, y: Tensor) -> Tensor:
        if not self.classification or self.loss == "cross_entropy":
            return y
        return torch.nn.functional.one_hot(y, self.k).to(torch.float32)  # square loss on one-hot targets

    # ------------------------------------------------------------------------------------------ training step
    def _batch(self, step: int) -> tuple[Tensor, Tensor]:
        b = self.spec.optim.batch_size or self.n
        if self.steps_per_epoch == 1:
            return self.X, self.Y
        epoch, pos = divmod(step, self.steps_per_epoch)
        if self._epoch_index is None or self._epoch_index[0] != epoch:
            perms = [torch.randperm(self.n, generator=torch.Generator().manual_seed(batch_seed(s, epoch)))
                     for s in self.grid.seed]
            self._epoch_index = (epoch, torch.stack(perms).to(self.device))
        idx = self._epoch_index[1][:, pos * b:(pos + 1) * b]  # (C, b)
        return self.X[idx], self.Y[idx]

    @torch.no_grad()
    def step(self, step: int) -> None:
        """One step of Algorithm 2 (0-based index `step`): gradient step, then the projections."""
        o = self.spec.optim
        X, Y = self._batch(step)
        per_config = X.dim() == 3
        grads = [self._gradients(X[c] if per_config else X, Y[c] if per_config else Y, c)
                 for c in self._chunks(X.shape[-2])]
        grad_W = grads[0][0] if len(grads) == 1 else torch.cat([g[0] for g in grads])
        grad_v = grads[0][1] if len(grads) == 1 else torch.cat([g[1] for g in grads])
        factor = lr_factor(o.schedule, step, self.total_steps, o.milestones, o.step_gamma)
        lr_W, lr_v = self.lr_hidden * factor, self.lr_outer * factor
        if o.name == "adam":
            for p, g, lr, name in ((self.W, grad_W, lr_W, "W"), (self.v, grad_v, lr_v, "v")):
                adam_step_(p, g, self.opt[f"{name}.exp_avg"], self.opt[f"{name}.exp_avg_sq"], lr, step + 1,
                           o.betas, o.eps, o.weight_decay)
        else:
            sgd_step_(self.W, grad_W, self.opt.get("W.momentum"), lr_W, o.momentum, o.weight_decay, o.nesterov)
            sgd_step_(self.v, grad_v, self.opt.get("v.momentum"), lr_v, o.momentum, o.weight_decay, o.nesterov)
        if self.project_w:
            project_onto_ball_(self.W, self.W0, self.radius)  # (10): ||W - W0||_F <= r
        if self.project_v:
            projected = project_onto_v_set(self.v, self.zeta, self.gamma)  # (10): v in V
            self.v_projected += (projected != self.v).flatten(1).any(dim=1).long()
            self.v.copy_(projected)

    def _chunks(self, rows: int, elements: int = CHUNK_ELEMENTS, per_config: int | None = None) -> list[slice]:
        # A step's activations are (C, m, rows) floats per buffer.  Past the CPU caches every elementwise pass runs
        # at DRAM speed, so configs go through the forward/backward in cache-sized groups (bench/RESULTS.md).
        size = max(1, elements // max(1, per_config or rows * self.width))
        C = len(self.grid)
        return [slice(c, min(c + size, C)) for c in range(0, C, size)]

    def _gradients(self, X: Tensor, Y: Tensor, configs: slice) -> tuple[Tensor, Tensor]:
        W, v = self.W[configs], self.v[configs]
        ws = self._workspace
        Hs, Bs, Phi_t = features(X, W, self.activation, self.pairwise, ws)
        _, grad_out = loss_and_grad(outputs(Phi_t, v, self.activation, self.pairwise), Y, self.loss, with_value=False)
        return backward(X, Hs, Bs, Phi_t, v, grad_out, self.activation, self.pairwise, ws)

    # -------------------------------------------------------------------------------------------- metrics
    @torch.no_grad()
    def evaluate(self, jacobian: bool = False) -> dict[str, Tensor]:
        """Per-config metrics (each a (C,) tensor), on the full training set and the test set.

        Configs go through in the step's cache-sized groups, with its padded buffers: memory does not grow with
        the pack, and a config's numbers are those it gets alone."""
        parts = [self._evaluate_configs(group) for group in self._chunks(max(self.n, self.X_test.shape[0]))]
        out = {name: torch.cat([part[name] for part in parts]) for name in parts[0]}
        out["w_dist"] = torch.linalg.vector_norm((self.W - self.W0).flatten(1), dim=1)
        out["v_min"], out["v_ratio"] = outer_weight_stats(self.v)
        if self.project_v:
            out["v_projected_steps"] = self.v_projected
        if jacobian:
            sigmas = [jacobian_sigma_min(self.X, self.W[g], outer_weights(self.v[g], self.pairwise), self.activation)
                      for g in self._chunks(self.n, JACOBIAN_ELEMENTS, per_config=self.n * (self.n + 2 * self.width))]
            if all(sigma is not None for sigma in sigmas):
                out["jacobian_sigma_min"] = torch.cat([s for s in sigmas if s is not None])
        return out

    def _evaluate_configs(self, configs: slice) -> dict[str, Tensor]:
        W, v, ws = self.W[configs], self.v[configs], self._workspace
        out: dict[str, Tensor] = {}
        F = outputs(features(self.X, W, self.activation, self.pairwise, ws)[2], v, self.activation, self.pairwise)
        out["train_loss"] = loss_value(F, self.Y, self.loss)
        if self.labels is not None:
            out["train_accuracy"] = accuracy(F, self.labels)
        if self.X_test.shape[0]:
            F_test = outputs(features(self.X_test, W, self.activation, self.pairwise, ws)[2], v, self.activation,
                             self.pairwise)
            out["test_loss"] = loss_value(F_test, self.Y_test, self.loss)
            if self.labels_test is not None:
                out["test_accuracy"] = accuracy(F_test, self.labels_test)
        return out

    # ------------------------------------------------------------------------------------------ state I/O
    def state_tensors(self, config: int = 0) -> dict[str, Tensor]:
        """One config's full training state (what a checkpoint holds to resume bit for bit)."""
        state = {"W": self.W[config], "v": self.v[config], "W0": self.W0[config]}
        state.update({f"opt.{k}": t[config] for k, t in self.opt.items()})
        if self.project_v:
            state[V_PROJECTED] = self.v_projected[config:config + 1]
        return state

    def load_state_tensors(self, tensors: dict[str, Tensor], config: int = 0) -> None:
        """Put one config's checkpointed state (a job's own checkpoint) at position `config`."""
        expected = set(self.state_tensors()) - {V_PROJECTED}
        missing = expected - set(tensors)
        if missing:
            raise CheckpointError(f"checkpoint lacks tensors {sorted(missing)}")
        for name in expected:
            target = self._tensor(name)
            src = tensors[name]
            if tuple(src.shape) != tuple(target.shape[1:]):
                raise CheckpointError(f"tensor {name}: shape {tuple(src.shape)} != {tuple(target.shape[1:])}")
            target[config].copy_(src)
        if self.project_v:
            # A diagnostic count, not training state: a checkpoint written before it existed restarts it at 0.
            self.v_projected[config] = tensors.get(V_PROJECTED, torch.zeros(1, dtype=torch.int64)).reshape(())

    def _tensor(self, name: str) -> Tensor:
        if name.startswith("opt."):
            return self.opt[name[4:]]
        return {"W": self.W, "v": self.v, "W0": self.W0}[name]
