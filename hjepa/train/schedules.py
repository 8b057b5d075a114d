"""Schedules as arrays indexed by step: resuming needs only the step number, never a replayed generator."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from hjepa.config import Config
from hjepa.models.ema import momentum_schedule


def warmup_cosine(
    base: float, final: float, total_steps: int, warmup_steps: int = 0, start: float = 0.0
) -> torch.Tensor:
    """``[total_steps + 1]`` values: linear warmup from ``start`` to ``base``, then cosine down to ``final``."""
    values = torch.empty(total_steps + 1, dtype=torch.float64)
    warmup_steps = min(warmup_steps, total_steps)
    for step in range(total_steps + 1):
        if step < warmup_steps:
            values[step] = start + (base - start) * step / warmup_steps
        else:
            progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
            values[step] = final + (base - final) * 0.5 * (1 + math.cos(math.pi * progress))
    return values


@dataclass
class Schedules:
    lr: torch.Tensor
    weight_decay: torch.Tensor
    momentum: torch.Tensor

    def at(self, step: int) -> tuple[float, float, float]:
        i = min(step, len(self.lr) - 1)
        return float(self.lr[i]), float(self.weight_decay[i]), float(self.momentum[i])


def build_schedules(cfg: Config) -> Schedules:
    optim, steps = cfg.optim, cfg.train.steps
    return Schedules(
        lr=warmup_cosine(optim.lr, optim.min_lr, steps, optim.warmup_steps),
        # Weight decay grows with a cosine (I-JEPA: 0.04 -> 0.4); no warmup.
        weight_decay=warmup_cosine(optim.final_weight_decay, optim.weight_decay, steps).flip(0),
        momentum=momentum_schedule(optim.ema_start, optim.ema_end, steps, optim.ema_schedule),
    )
