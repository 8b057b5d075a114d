"""Models: ViT encoders, predictors (transformer, Hamiltonian), hierarchy heads, EMA and the HJEPA model."""

from hjepa.models.ema import ema_update, momentum_schedule
from hjepa.models.hamiltonian import HamiltonianPredictor
from hjepa.models.hierarchy import LevelHead, level_grid, pool_tokens
from hjepa.models.hjepa import HJEPA, build_model
from hjepa.models.predictor import PREDICTORS, TransformerPredictor
from hjepa.models.vit import VIT_SIZES, ViTEncoder

__all__ = [
    "HJEPA",
    "PREDICTORS",
    "VIT_SIZES",
    "HamiltonianPredictor",
    "LevelHead",
    "TransformerPredictor",
    "ViTEncoder",
    "build_model",
    "ema_update",
    "level_grid",
    "momentum_schedule",
    "pool_tokens",
]
