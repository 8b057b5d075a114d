"""I-JEPA multi-block masks: one context block and ``num_targets`` target blocks of one scale range."""

from __future__ import annotations

from hjepa.config import ConfigError, MaskConfig
from hjepa.masks.blocks import check_range
from hjepa.masks.generator import BlockMaskGenerator, LevelBlocks
from hjepa.masks.registry import MASK_GENERATORS


@MASK_GENERATORS.register("multiblock")
class MultiBlockMaskGenerator(BlockMaskGenerator):
    """I-JEPA's masks, batched, with its defaults: ``num_targets`` blocks and a context block minus them.

    With L > 1 levels, the same blocks on the coarsest ``2**(L-1)`` cells serve every level, so each sees whole cells.
    """

    def __init__(
        self,
        grid_size: int | tuple[int, int],
        num_targets: int = 4,
        target_scale: tuple[float, float] = (0.15, 0.2),
        target_aspect: tuple[float, float] = (0.75, 1.5),
        context_scale: tuple[float, float] = (0.85, 1.0),
        context_aspect: tuple[float, float] = (1.0, 1.0),
        min_keep: int = 10,
        max_attempts: int = 20,
        num_levels: int = 1,
    ) -> None:
        if not 1 <= num_levels <= 8:
            raise ConfigError(f"num_levels must be between 1 and 8, got {num_levels}")
        blocks = LevelBlocks(
            cell=2 ** (num_levels - 1),
            num_targets=int(num_targets),
            scale=check_range("target_scale", target_scale, 0.0, 1.0),
            aspect=check_range("target_aspect", target_aspect, 0.0),
        )
        super().__init__(
            grid_size,
            levels=[blocks],
            output_levels=[0] * num_levels,
            context_scale=context_scale,
            context_aspect=context_aspect,
            min_keep=min_keep,
            max_attempts=max_attempts,
        )

    @classmethod
    def from_config(cls, cfg: MaskConfig, grid_size: int | tuple[int, int], num_levels: int) -> MultiBlockMaskGenerator:
        """The first ``cfg.num_targets``; the scale progression does not apply."""
        if not cfg.num_targets:
            raise ConfigError("masks.num_targets must hold at least one value")
        return cls(
            grid_size,
            num_targets=cfg.num_targets[0],
            target_scale=cfg.target_scale,
            target_aspect=cfg.target_aspect,
            context_scale=cfg.context_scale,
            context_aspect=cfg.context_aspect,
            min_keep=cfg.min_keep,
            max_attempts=cfg.max_attempts,
            num_levels=num_levels,
        )
