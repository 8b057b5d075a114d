"""The training loss from the ``loss`` config; a new regulariser is one file and one ``register`` line."""

from __future__ import annotations

from torch import nn

from hjepa.config import ConfigError, LossConfig
from hjepa.losses.barlow import BarlowTwinsLoss
from hjepa.losses.combined import CombinedLoss, expand_per_level
from hjepa.losses.multiview import MultiViewLoss
from hjepa.losses.prediction import PREDICTION_LOSSES, HJEPALoss
from hjepa.losses.sigreg import SIGRegLoss
from hjepa.losses.vicreg import VICRegLoss
from hjepa.registry import Registry

REGULARIZERS = Registry("regularizer")
REGULARIZERS.register("vicreg")(VICRegLoss)
REGULARIZERS.register("barlow")(BarlowTwinsLoss)
REGULARIZERS.register("sigreg")(SIGRegLoss)


def regularizer_names() -> list[str]:
    """Valid values of ``loss.regularizer``: ``none`` and every registered regulariser."""
    return ["none", *REGULARIZERS.names()]


def build_regularizer(cfg: LossConfig) -> nn.Module | None:
    """The regulariser named by ``cfg.regularizer`` built from its ``cfg`` fields, or ``None`` for ``"none"``."""
    if cfg.regularizer == "none":
        return None
    if cfg.regularizer not in REGULARIZERS:
        raise ConfigError(
            f"unknown loss.regularizer {cfg.regularizer!r}; valid names: {', '.join(regularizer_names())}"
        )
    return REGULARIZERS.get(cfg.regularizer).from_config(cfg)


def build_loss(cfg: LossConfig, num_levels: int) -> nn.Module:
    """``CombinedLoss``; with ``regularizer: none``, the plain ``HJEPALoss`` behind the same signature."""
    if num_levels < 1:
        raise ConfigError(f"num_levels must be at least 1, got {num_levels}")
    if cfg.prediction not in PREDICTION_LOSSES:
        raise ConfigError(f"unknown loss.prediction {cfg.prediction!r}; valid names: {', '.join(PREDICTION_LOSSES)}")
    level_weights = [1.0] * num_levels if cfg.level_weights is None else list(cfg.level_weights)
    if len(level_weights) != num_levels:
        raise ConfigError(f"loss.level_weights has {len(level_weights)} values but the model has {num_levels} levels")
    try:
        regularizer_weights = expand_per_level(cfg.regularizer_weight, num_levels, "loss.regularizer_weight")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if any(w < 0 for w in regularizer_weights):
        raise ConfigError(f"loss.regularizer_weight must be non-negative, got {cfg.regularizer_weight}")
    prediction = HJEPALoss(
        loss_type=cfg.prediction,
        huber_delta=cfg.huber_delta,
        normalize=cfg.normalize,
        level_weights=level_weights,
    )
    return CombinedLoss(prediction, build_regularizer(cfg), regularizer_weights)


def build_multiview_loss(cfg: LossConfig, num_levels: int) -> MultiViewLoss:
    """``MultiViewLoss``: ``loss.regularizer`` is required, its weight is LeJEPA's lambda."""
    if cfg.regularizer == "none":
        raise ConfigError("model.objective=multiview needs loss.regularizer (sigreg, vicreg or barlow): without one "
                          "the views' embeddings collapse to a constant")
    level_weights = [1.0] * num_levels if cfg.level_weights is None else list(cfg.level_weights)
    if len(level_weights) != num_levels:
        raise ConfigError(f"loss.level_weights has {len(level_weights)} values but the model has {num_levels} levels")
    try:
        weights = expand_per_level(cfg.regularizer_weight, num_levels, "loss.regularizer_weight")
        spatial = expand_per_level(cfg.spatial_weight, num_levels, "loss.spatial_weight")
        regularizer = build_regularizer(cfg)
        if any(spatial) and getattr(regularizer, "pairwise", True) and not getattr(regularizer, "accepts_single_view",
                                                                                  False):
            raise ConfigError(f"loss.spatial_weight needs a regulariser of one view's cells (vicreg or sigreg), "
                              f"not {cfg.regularizer}")
        cells = expand_per_level(cfg.cell_weight, num_levels, "loss.cell_weight")
        tiles = expand_per_level(cfg.tile_weight, num_levels, "loss.tile_weight")
        return MultiViewLoss(regularizer, weights, level_weights, spatial, cells, cfg.cell_standardise, tiles)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
