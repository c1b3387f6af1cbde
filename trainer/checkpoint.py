"""Checkpoints: safetensors weights + a JSON metadata file, written atomically; never pickle.

A checkpoint at step s is `ckpt-<s>.safetensors` and `ckpt-<s>.json` in the run directory.  The weights file is
renamed into place first, then the JSON (which holds the weights' sha256); the JSON is the commit marker, so a
crash between the two leaves the previous checkpoint as the latest valid one.
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from trainer.checkpoint_format import FORMAT, KEEP_LATEST, header_metadata
from trainer.files import atomic_write

_NAME = re.compile(r"^ckpt-(\d{9})\.json$")


class CheckpointError(ValueError):
    """A checkpoint is missing, torn, or does not match its recorded sha256."""


@dataclass(frozen=True)
class Checkpoint:
    path: Path  # the .safetensors file
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.meta["step"])


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        ours = version("narrownet")
    except PackageNotFoundError:
        ours = "unknown"
    return {"narrownet": ours, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def checkpoint_paths(run_dir: Path, step: int) -> tuple[Path, Path]:
    stem = run_dir / f"ckpt-{step:09d}"
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def save_checkpoint(run_dir: Path, step: int, tensors: dict[str, torch.Tensor], meta: dict[str, Any], *,
                    durable: bool = True) -> tuple[Path, dict[str, Any]]:
    """Write ckpt-<step>.{safetensors,json}; return the weights path and the full metadata (with sha256).

    durable=False: not fsynced (files.atomic_write); a crash may then lose or tear it, which a resume detects
    (the sha256 check) and skips for an older checkpoint."""
    run_dir.mkdir(parents=True, exist_ok=True)
    weights, meta_path = checkpoint_paths(run_dir, step)
    contiguous = {k: t.detach().to("cpu").contiguous() for k, t in tensors.items()}
    header = header_metadata(step)
    atomic_write(weights, lambda p: save_file(contiguous, str(p), metadata=header), durable=durable)
    full = {"format": FORMAT, **meta, "step": step, "sha256": sha256_file(weights),
            "size_bytes": weights.stat().st_size, "tensors": sorted(contiguous),
            "versions": library_versions()}
    atomic_write(meta_path, lambda p: p.write_text(json.dumps(full, indent=2, sort_keys=True)), durable=durable)
    _prune(run_dir)
    return weights, full


def _prune(run_dir: Path) -> None:
    for meta_path in sorted(p for p in run_dir.iterdir() if _NAME.match(p.name))[:-KEEP_LATEST]:
        meta_path.unlink(missing_ok=True)
        meta_path.with_suffix(".safetensors").unlink(missing_ok=True)


def load_checkpoint(weights: Path) -> Checkpoint:
    """Load and verify a checkpoint from its .safetensors path (the .json beside it holds the sha256)."""
    weights = Path(weights)
    meta_path = weights.with_suffix(".json")
    if not weights.is_file() or not meta_path.is_file():
        raise CheckpointError(f"checkpoint {weights.name}: weights or metadata file missing")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"checkpoint {meta_path.name}: metadata is not valid JSON ({e})") from e
    if (not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("sha256"), str)
            or type(meta.get("step")) is not int):
        raise CheckpointError(f"checkpoint {meta_path.name}: not a {FORMAT} metadata file")
    actual = sha256_file(weights)
    if actual != meta["sha256"]:
        raise CheckpointError(f"checkpoint {weights.name}: sha256 {actual} does not match recorded {meta['sha256']}")
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {weights.name}: unreadable safetensors ({e})") from e
    return Checkpoint(path=weights, tensors=tensors, meta=meta)


def latest_checkpoint(run_dir: Path) -> Checkpoint | None:
    """The newest checkpoint in run_dir that verifies; None if there is none.  Torn newer ones are skipped."""
    if not run_dir.is_dir():
        return None
    errors = []
    for meta_path in sorted((p for p in run_dir.iterdir() if _NAME.match(p.name)), reverse=True):
        try:
            return load_checkpoint(meta_path.with_suffix(".safetensors"))
        except CheckpointError as e:
            errors.append(str(e))
    if errors:
        raise CheckpointError("; ".join(errors))
    return None
