"""H-JEPA prediction loss over levels h, predictions P_h and targets T_h ``[B, N, D]``, mask m_h ``[B, N]``::

    d_h[n] = 1/D * sum_k dist(P_h[n, k], sg(T_h[n, k]))     dist: mse, huber or smoothl1 (huber / delta)
    L_h    = sum_n m_h[n] d_h[n] / sum_n m_h[n]
    loss   = sum_h w_h L_h,   loss_unweighted = sum_h L_h

In float32 even under autocast: bf16 loses the bits of nearly equal embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PREDICTION_LOSSES = ("huber", "mse", "smoothl1")
REDUCTIONS = ("mean", "none", "sum")


def as_level_list(value: Tensor | Sequence[Tensor], name: str) -> list[Tensor]:
    """A single tensor is one level; a list or tuple is one tensor per level."""
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return list(value)
    raise TypeError(f"{name} must be a tensor or a list of tensors (one per level), got {type(value).__name__}")


def as_mask_list(masks: Tensor | Sequence[Tensor | None] | None, num_levels: int) -> list[Tensor | None]:
    """One mask (or ``None``) per level; a single tensor is the mask of a single level."""
    if masks is None:
        return [None] * num_levels
    mask_list = [masks] if isinstance(masks, Tensor) else list(masks)
    if len(mask_list) != num_levels:
        raise ValueError(f"got {num_levels} levels of predictions but {len(mask_list)} masks")
    return mask_list


class HJEPALoss(nn.Module):
    """``{'loss', 'loss_unweighted', 'loss_h0', ...}``; ``normalize`` L2-normalises both sides first.

    ``reduction="none"`` reports per-position ``loss_h{i}`` but still trains on the masked means.
    """

    def __init__(
        self,
        loss_type: str = "smoothl1",
        huber_delta: float = 1.0,
        normalize: bool = False,
        level_weights: list[float] | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        if loss_type not in PREDICTION_LOSSES:
            raise ValueError(f"unknown prediction loss {loss_type!r}; valid names: {', '.join(PREDICTION_LOSSES)}")
        if reduction not in REDUCTIONS:
            raise ValueError(f"unknown reduction {reduction!r}; valid values: {', '.join(REDUCTIONS)}")
        if huber_delta <= 0:
            raise ValueError(f"huber_delta must be positive, got {huber_delta}")
        self.loss_type = loss_type
        self.huber_delta = float(huber_delta)
        self.normalize = normalize
        self.level_weights = None if level_weights is None else [float(w) for w in level_weights]
        self.reduction = reduction

    def distance(self, prediction: Tensor, target: Tensor) -> Tensor:
        """Element-wise distance ``[..., D]``."""
        if self.normalize:
            prediction = F.normalize(prediction, dim=-1, eps=1e-6)
            target = F.normalize(target, dim=-1, eps=1e-6)
        if self.loss_type == "mse":
            return F.mse_loss(prediction, target, reduction="none")
        if self.loss_type == "huber":
            return F.huber_loss(prediction, target, reduction="none", delta=self.huber_delta)
        return F.smooth_l1_loss(prediction, target, reduction="none", beta=self.huber_delta)

    def forward(
        self,
        predictions: Tensor | Sequence[Tensor],
        targets: Tensor | Sequence[Tensor],
        masks: Tensor | Sequence[Tensor | None] | None = None,
    ) -> dict[str, Tensor]:
        """Per level ``[B, N_h, D_h]`` (one tensor: one level); masks bool or float weights ``[B, N_h]``."""
        predictions = as_level_list(predictions, "predictions")
        targets = as_level_list(targets, "targets")
        num_levels = len(predictions)
        if len(targets) != num_levels:
            raise ValueError(f"got {num_levels} levels of predictions but {len(targets)} levels of targets")
        mask_list = as_mask_list(masks, num_levels)
        weights = self.level_weights if self.level_weights is not None else [1.0] * num_levels
        if len(weights) != num_levels:
            raise ValueError(f"level_weights has {len(weights)} values but there are {num_levels} levels")

        out: dict[str, Tensor] = {}
        total = unweighted = None
        for level, (prediction, target, mask) in enumerate(zip(predictions, targets, mask_list, strict=True)):
            if prediction.shape != target.shape:
                raise ValueError(
                    f"level {level}: predictions {tuple(prediction.shape)} and targets {tuple(target.shape)} differ"
                )
            reported, mean_loss = self._level_loss(prediction, target, mask, level)
            out[f"loss_h{level}"] = reported
            total = weights[level] * mean_loss if total is None else total + weights[level] * mean_loss
            unweighted = mean_loss if unweighted is None else unweighted + mean_loss
        if total is None or unweighted is None:
            raise ValueError("predictions is an empty list; expected at least one level")
        return {"loss": total, "loss_unweighted": unweighted, **out}

    def _level_loss(self, prediction: Tensor, target: Tensor, mask: Tensor | None, level: int) -> tuple[Tensor, Tensor]:
        """(reported ``loss_h{level}``, scalar entering ``loss``)."""
        with torch.autocast(device_type=prediction.device.type, enabled=False):
            elementwise = self.distance(prediction.float(), target.detach().float())  # [..., D]
            per_position = elementwise.sum(-1) if self.reduction == "sum" else elementwise.mean(-1)  # [...]
            if mask is None:
                weight = torch.ones((), device=per_position.device)
            else:
                lead = tuple(per_position.shape)
                try:
                    broadcast = torch.broadcast_shapes(tuple(mask.shape), lead)
                except RuntimeError:
                    broadcast = None
                if broadcast != lead:
                    raise ValueError(
                        f"level {level}: mask of shape {tuple(mask.shape)} does not broadcast to the leading dims "
                        f"{lead} of predictions {tuple(prediction.shape)}"
                    )
                weight = mask.to(device=per_position.device, dtype=torch.float32)
            weighted = per_position * weight
            if self.reduction == "sum":
                return weighted.sum(), weighted.sum()
            # clamp: an empty mask gives 0, not 0/0
            count = weight.expand_as(per_position).sum().clamp_min(1e-12)
            mean_loss = weighted.sum() / count
            return (weighted if self.reduction == "none" else mean_loss), mean_loss
