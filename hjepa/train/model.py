"""The training model: the architecture from ``hjepa.models`` with its loss wired in.

The loss belongs to training, so ``hjepa.models`` never imports ``hjepa.losses`` (as dinov2's
``train/ssl_meta_arch.py`` wires its losses around the backbone): inference builds the same architecture without one.
"""

from __future__ import annotations

import torch.nn as nn

from hjepa.config import Config
from hjepa.losses import build_loss, build_multiview_loss
from hjepa.models import build_model


def build_training_model(cfg: Config) -> nn.Module:
    """``HJEPA`` (``model.objective=masked``) or ``MultiViewJEPA`` (``multiview``) with the loss ``cfg.loss`` says."""
    if cfg.model.objective == "multiview":
        return build_model(cfg, build_multiview_loss(cfg.loss, cfg.model.num_levels))
    if cfg.model.objective == "masked":
        return build_model(cfg, build_loss(cfg.loss, cfg.model.num_levels))
    return build_model(cfg)  # an unknown objective: build_model names the valid ones
