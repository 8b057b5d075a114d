"""``MASK_GENERATORS``: name -> mask generator class, and ``build_mask_generator`` from a ``MaskConfig``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hjepa.registry import Registry

if TYPE_CHECKING:
    from hjepa.config import MaskConfig
    from hjepa.masks.generator import BlockMaskGenerator

# each class has from_config(cfg, grid_size, num_levels)
MASK_GENERATORS = Registry("mask generator")


def build_mask_generator(cfg: MaskConfig, grid_size: int | tuple[int, int], num_levels: int) -> BlockMaskGenerator:
    """The generator ``cfg.generator`` names; an unknown name lists the valid ones."""
    # register them even when only this module is imported
    import hjepa.masks  # noqa: F401

    return MASK_GENERATORS.get(cfg.generator).from_config(cfg, grid_size, num_levels)  # type: ignore[attr-defined]
