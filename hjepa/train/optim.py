"""AdamW with decay only on weight matrices; fused (one kernel for all parameters) on every device torch has a
fused kernel for: CUDA, and the CPU too, where it is about 3x faster than the default per-parameter loop (16 vs 54 ms
for 16.6M parameters on 2 cores)."""

from __future__ import annotations

import torch
import torch.nn as nn

from hjepa.config import OptimConfig


def parameter_groups(model: nn.Module) -> list[dict]:
    """Biases, norms and 1-D parameters (mask tokens, level embeddings) get no weight decay."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    return [{"params": decay, "apply_decay": True}, {"params": no_decay, "apply_decay": False, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg: OptimConfig, device: torch.device) -> torch.optim.Optimizer:
    groups = parameter_groups(model)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay,
                             fused=fused_supported(device) or None)


def fused_supported(device: torch.device) -> bool:
    """Whether torch has a fused AdamW kernel for ``device`` (CUDA and CPU among them in torch >= 2.4)."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
    except ImportError:  # private helper: fall back to the device every torch release supports
        return device.type == "cuda"
    return device.type in _get_fused_kernels_supported_devices()


def set_hyperparameters(optimizer: torch.optim.Optimizer, lr: float, weight_decay: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
        group["weight_decay"] = weight_decay if group.get("apply_decay", True) else 0.0
