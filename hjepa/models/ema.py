"""EMA target: momentum schedules as arrays indexed by step, and an in-place ``_foreach_lerp_`` update."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from hjepa.config import ConfigError


def momentum_schedule(start: float, end: float, total_steps: int, kind: str = "cosine") -> torch.Tensor:
    """``[total_steps + 1]`` float64 momentum values from ``start`` to ``end`` (cosine or linear)."""
    if kind not in ("cosine", "linear"):
        raise ConfigError(f"optim.ema_schedule must be 'cosine' or 'linear', got {kind!r}")
    t = torch.arange(total_steps + 1, dtype=torch.float64) / max(total_steps, 1)
    if kind == "linear":
        return start + (end - start) * t
    return end - (end - start) * (torch.cos(math.pi * t) + 1) / 2


@torch.no_grad()
def ema_update(target: list[nn.Module], online: list[nn.Module], momentum: float) -> None:
    """target = momentum * target + (1 - momentum) * online, for every float parameter and buffer.

    Non-float buffers (counters, indices) are copied: an average of integers means nothing.
    """
    target_params, online_params = [], []
    for t_mod, o_mod in zip(target, online, strict=True):
        for t_param, o_param in zip(t_mod.parameters(), o_mod.parameters(), strict=True):
            target_params.append(t_param)
            online_params.append(o_param.detach())
        for t_buf, o_buf in zip(t_mod.buffers(), o_mod.buffers(), strict=True):
            if t_buf.is_floating_point():
                t_buf.lerp_(o_buf, 1.0 - momentum)
            else:
                t_buf.copy_(o_buf)
    if target_params:
        torch._foreach_lerp_(target_params, online_params, 1.0 - momentum)
