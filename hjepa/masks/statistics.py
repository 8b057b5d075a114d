"""Summary numbers of a ``MaskBatch``, for training logs and tuning generators."""

from __future__ import annotations

from typing import Any

import torch

from hjepa.masks.batch import MaskBatch


def mask_statistics(masks: MaskBatch) -> dict[str, Any]:
    """Batch means of what the masks cover, JSON-ready; ``overlap`` (context and target at once) is 0 when valid."""
    num_patches = masks.grid[0] * masks.grid[1]
    context = masks.context.detach().bool().cpu()
    level_unions = [t.detach().bool().cpu().any(dim=1) for t in masks.targets]  # per level [B, N]
    union = torch.stack(level_unions).any(dim=0) if level_unions else torch.zeros_like(context)
    return {
        "batch_size": masks.batch_size,
        "grid": list(masks.grid),
        "num_levels": masks.num_levels,
        "context_tokens": masks.num_context,
        "context_fraction": context.float().sum(dim=1).mean().item() / num_patches,
        "overlap": int((context & union).sum()),
        "target_union_fraction": union.float().mean().item(),
        "uncovered_fraction": (~context & ~union).float().mean().item(),
        "target_blocks": [int(t.shape[1]) for t in masks.targets],
        "target_shape": [[h, w] for h, w in masks.target_shapes],
        "target_cells": [(h * w) // 4**k for k, (h, w) in enumerate(masks.target_shapes)],
        "target_coverage": [u.float().mean().item() for u in level_unions],
    }
