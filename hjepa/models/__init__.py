"""Models: ViT encoders, predictors (transformer, cross-attention, Hamiltonian), level heads, EMA, the HJEPA model."""

from hjepa.models.build import OBJECTIVES, build_model
from hjepa.models.cross_predictor import CrossAttentionPredictor
from hjepa.models.ema import ema_update, momentum_schedule
from hjepa.models.hamiltonian import HamiltonianPredictor
from hjepa.models.hierarchy import LevelHead, level_grid, pool_tokens
from hjepa.models.hjepa import HJEPA
from hjepa.models.level_encoder import LevelEncoder, build_level_encoder, level_features
from hjepa.models.predictor import PREDICTORS, TransformerPredictor
from hjepa.models.vit import VIT_SIZES, ViTEncoder

__all__ = [
    "HJEPA",
    "OBJECTIVES",
    "CrossAttentionPredictor",
    "PREDICTORS",
    "VIT_SIZES",
    "HamiltonianPredictor",
    "LevelEncoder",
    "LevelHead",
    "TransformerPredictor",
    "ViTEncoder",
    "build_level_encoder",
    "build_model",
    "ema_update",
    "level_features",
    "level_grid",
    "momentum_schedule",
    "pool_tokens",
]
