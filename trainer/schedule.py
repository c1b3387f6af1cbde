"""Learning-rate schedules as a multiplier of the base rate at a given step (0-based)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def lr_factor(schedule: str, step: int, total_steps: int, milestones: Sequence[float] = (),
              gamma: float = 0.1) -> float:
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
    if schedule == "step":
        passed = sum(1 for frac in milestones if step >= int(frac * total_steps))
        return gamma**passed
    raise ValueError(f"unknown schedule {schedule!r}")
