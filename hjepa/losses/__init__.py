"""Losses: the hierarchical prediction loss, the VICReg / Barlow Twins / SIGReg regularisers, their combination and
``build_loss`` from the config. All compute in float32 and return a dict of named scalar parts."""

from hjepa.losses.barlow import BarlowTwinsLoss
from hjepa.losses.combined import CombinedLoss, HierarchicalCombinedLoss
from hjepa.losses.factory import (
    REGULARIZERS,
    build_loss,
    build_multiview_loss,
    build_regularizer,
    regularizer_names,
)
from hjepa.losses.multiview import MultiViewLoss
from hjepa.losses.prediction import HJEPALoss
from hjepa.losses.sigreg import SIGRegLoss
from hjepa.losses.vicreg import VICRegLoss

__all__ = [
    "REGULARIZERS",
    "BarlowTwinsLoss",
    "CombinedLoss",
    "HJEPALoss",
    "HierarchicalCombinedLoss",
    "MultiViewLoss",
    "SIGRegLoss",
    "VICRegLoss",
    "build_loss",
    "build_multiview_loss",
    "build_regularizer",
    "regularizer_names",
]
