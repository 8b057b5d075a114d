"""``build_model``: the architecture ``cfg.model.objective`` names (masked-block ``HJEPA`` or ``MultiViewJEPA``)."""

from __future__ import annotations

import torch.nn as nn

from hjepa.config import Config
from hjepa.models.hjepa import HJEPA
from hjepa.models.multiview import MultiViewJEPA

OBJECTIVES = ("masked", "multiview")


def build_model(cfg: Config, loss_fn: nn.Module | None = None) -> nn.Module:
    """The model architecture for ``cfg.model.objective`` from a resolved config.

    ``loss_fn`` is wired in by the training side (``hjepa.train.model.build_training_model``); without one the model
    serves inference only (``extract_features``, ``extract_levels``) and its training ``forward`` refuses to run.
    """
    if cfg.model.objective == "masked":
        return HJEPA(cfg, loss_fn)
    if cfg.model.objective == "multiview":
        return MultiViewJEPA(cfg, loss_fn)
    raise ValueError(f"unknown model.objective {cfg.model.objective!r}; valid: {', '.join(OBJECTIVES)}")
