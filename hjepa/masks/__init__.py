"""Mask generators, batched: I-JEPA multi-block and hierarchical; ``generator(batch_size, rng) -> MaskBatch``."""

from hjepa.masks.batch import MaskBatch
from hjepa.masks.drawing import draw_masks
from hjepa.masks.generator import BlockMaskGenerator, LevelBlocks
from hjepa.masks.hierarchical import HierarchicalMaskGenerator, level_scales
from hjepa.masks.multiblock import MultiBlockMaskGenerator
from hjepa.masks.queries import QueryLayout, query_layout
from hjepa.masks.registry import MASK_GENERATORS, build_mask_generator
from hjepa.masks.statistics import mask_statistics

__all__ = [
    "MASK_GENERATORS",
    "BlockMaskGenerator",
    "HierarchicalMaskGenerator",
    "LevelBlocks",
    "MaskBatch",
    "MultiBlockMaskGenerator",
    "QueryLayout",
    "build_mask_generator",
    "draw_masks",
    "level_scales",
    "mask_statistics",
    "query_layout",
]
