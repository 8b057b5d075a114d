"""Prediction loss plus per-level regularisation of context embeddings E_h (default: the predictions)::

    loss = L_pred(P, T, masks) + sum_{h : alpha_h > 0} alpha_h R_h(E_h, sg(T_h))     (pairwise: VICReg, Barlow)
                               + sum_{h : alpha_h > 0} alpha_h R_h(E_h, step)         (SIGReg)

Only masked-in positions are regularised, so padding never enters the batch statistics.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from hjepa.losses.prediction import HJEPALoss, as_level_list, as_mask_list


def expand_per_level(values: Sequence[float], num_levels: int, name: str) -> list[float]:
    """Per-level values where the last one repeats: ``[a, b]`` over 4 levels is ``[a, b, b, b]``."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError(f"{name} is empty; give at least one value (the last value repeats for deeper levels)")
    if len(values) > num_levels:
        raise ValueError(f"{name} has {len(values)} values but there are only {num_levels} levels")
    return values + [values[-1]] * (num_levels - len(values))


class HierarchicalCombinedLoss(nn.Module):
    """``HJEPALoss`` plus one regulariser (or ``None``) per level; the last weight repeats for deeper levels."""

    def __init__(
        self,
        prediction: HJEPALoss,
        regularizers: Sequence[nn.Module | None],
        regularizer_weights: Sequence[float],
    ) -> None:
        super().__init__()
        self.prediction = prediction
        # keyed by level: levels without a regulariser hold None
        self.regularizers = nn.ModuleDict({str(h): r for h, r in enumerate(regularizers) if r is not None})
        self.num_given = len(regularizers)
        self.regularizer_weights = [float(w) for w in regularizer_weights]
        if not self.regularizer_weights:
            raise ValueError("regularizer_weights is empty; give at least one value (the last value repeats)")

    def regularizer_for(self, level: int) -> nn.Module | None:
        """Asked only for levels with a positive weight."""
        if level >= self.num_given:
            raise ValueError(
                f"level {level} has a positive regularizer weight but only {self.num_given} regularizers were given "
                "(pass None for a level without one)"
            )
        key = str(level)
        return self.regularizers[key] if key in self.regularizers else None

    def forward(
        self,
        predictions: Tensor | Sequence[Tensor],
        targets: Tensor | Sequence[Tensor],
        masks: Tensor | Sequence[Tensor | None] | None = None,
        context_embeddings: Tensor | Sequence[Tensor] | None = None,
        step: int = 0,
    ) -> dict[str, Tensor]:
        """Per level: predictions, targets ``[B, N_h, D_h]``, masks ``[B, N_h]``, context embeddings ``[..., D_h]``."""
        predictions = as_level_list(predictions, "predictions")
        targets = as_level_list(targets, "targets")
        out = self.prediction(predictions, targets, masks)
        num_levels = len(predictions)
        padding = max(0, num_levels - len(self.regularizer_weights))
        weights = self.regularizer_weights + [self.regularizer_weights[-1]] * padding
        if context_embeddings is None:
            mask_list = as_mask_list(masks, num_levels)
            pairs = [_select(p, t, m) for p, t, m in zip(predictions, targets, mask_list, strict=True)]
        else:
            embeddings = as_level_list(context_embeddings, "context_embeddings")
            if len(embeddings) != num_levels:
                raise ValueError(f"got {num_levels} levels of predictions but {len(embeddings)} of context_embeddings")
            pairs = list(zip(embeddings, targets, strict=True))

        regularization = None
        for level, (embedding, target) in enumerate(pairs):
            if weights[level] <= 0:
                continue
            regularizer = self.regularizer_for(level)
            if regularizer is None:
                continue
            if getattr(regularizer, "pairwise", True):
                parts = regularizer(embedding, target.detach())
            else:
                parts = regularizer(embedding, step=step)
            out[f"reg_h{level}"] = parts["loss"]
            out.update({f"reg_h{level}_{name}": value for name, value in parts.items() if name != "loss"})
            term = weights[level] * parts["loss"]
            regularization = term if regularization is None else regularization + term
        out["loss_prediction"] = out["loss"]
        if regularization is None:
            regularization = torch.zeros((), device=out["loss"].device)
        out["loss_regularizer"] = regularization
        out["loss"] = out["loss"] + regularization
        return out


class CombinedLoss(HierarchicalCombinedLoss):
    """One regulariser shared by every weighted level; ``None`` gives the plain loss with the same keys."""

    def __init__(
        self,
        prediction: HJEPALoss,
        regularizer: nn.Module | None,
        regularizer_weights: Sequence[float] = (0.0,),
    ) -> None:
        # one instance, registered once, not per level
        super().__init__(prediction, [], regularizer_weights)
        self.regularizer = regularizer

    def regularizer_for(self, level: int) -> nn.Module | None:
        return self.regularizer


def _select(prediction: Tensor, target: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """Rows ``[K, D]`` where the mask is non-zero."""
    if mask is None:
        return prediction, target
    keep = (mask != 0).to(prediction.device).expand(prediction.shape[:-1])
    return prediction[keep], target[keep]
