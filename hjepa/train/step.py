"""One optimisation step, testable on its own: forward, backward, clip, optimizer step, EMA update."""

from __future__ import annotations

import contextlib

import torch
import torch.nn as nn

from hjepa.train.optim import set_hyperparameters
from hjepa.train.schedules import Schedules


def autocast_context(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast when ``amp`` (resolved per device by ``hjepa.device.amp_enabled``). bf16 needs no GradScaler."""
    if amp:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_step(
    model: nn.Module,
    target_model: nn.Module,
    images: torch.Tensor,
    masks: object,
    optimizer: torch.optim.Optimizer,
    schedules: Schedules,
    step: int,
    clip_grad: float = 0.0,
    amp: bool = False,
) -> dict[str, torch.Tensor]:
    """Run step ``step`` and return the model's output dict (tensors still on the device: no host sync here).

    ``model`` is what runs the forward (possibly DDP- or compile-wrapped); ``target_model`` is the bare HJEPA module
    whose ``update_target`` does the EMA.
    """
    lr, weight_decay, _ = schedules.at(step)
    set_hyperparameters(optimizer, lr, weight_decay)

    # Step 1. Forward
    with autocast_context(images.device, amp):
        outputs = model(images, masks, step)

    # Step 2. Backward & step
    optimizer.zero_grad(set_to_none=True)
    outputs["loss"].backward()
    if clip_grad > 0:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        outputs["grad_norm"] = torch.nn.utils.clip_grad_norm_(params, clip_grad)
    optimizer.step()

    # Step 3. Momentum update of the target encoder and heads
    outputs["momentum"] = torch.tensor(target_model.update_target(step))
    outputs["lr"] = torch.tensor(lr)
    return outputs
