"""Hierarchical masks: per-level target blocks whose scale grows with the level, aligned to the level's cells."""

from __future__ import annotations

from collections.abc import Sequence

from hjepa.config import ConfigError, MaskConfig
from hjepa.masks.blocks import check_range
from hjepa.masks.generator import BlockMaskGenerator, LevelBlocks
from hjepa.masks.registry import MASK_GENERATORS

SCALE_PROGRESSIONS = ("geometric", "linear")


def level_scales(
    base: tuple[float, float], num_levels: int, progression: str, factor: float
) -> list[tuple[float, float]]:
    """Each level's scale range from level 0's ``base``, clamped to 1.

    ``geometric``: ``base * factor**k``; ``linear``: ``base * (1 + k * (factor - 1))``, equal at level 1.
    """
    if progression not in SCALE_PROGRESSIONS:
        raise ConfigError(f"scale_progression must be one of {', '.join(SCALE_PROGRESSIONS)}, got {progression!r}")
    if not factor > 0:
        raise ConfigError(f"scale_factor must be > 0, got {factor}")
    scales = []
    for k in range(num_levels):
        growth = factor**k if progression == "geometric" else 1.0 + k * (factor - 1.0)
        if growth <= 0:
            raise ConfigError(
                f"linear scale_factor {factor} gives a non-positive target scale at level {k}; use a factor > "
                f"{1 - 1 / k:.3f} or fewer levels"
            )
        scales.append((min(1.0, base[0] * growth), min(1.0, base[1] * growth)))
    return scales


@MASK_GENERATORS.register("hierarchical")
class HierarchicalMaskGenerator(BlockMaskGenerator):
    """Per level ``k``, ``num_targets[k]`` blocks on ``2**k`` cells, so a level-k cell is wholly a target or not.

    ``num_targets``' last value repeats; ``target_scale`` is level 0's fraction of the grid.
    """

    def __init__(
        self,
        grid_size: int | tuple[int, int],
        num_levels: int,
        num_targets: int | Sequence[int] = 4,
        target_scale: tuple[float, float] = (0.15, 0.2),
        scale_progression: str = "geometric",
        scale_factor: float = 1.5,
        target_aspect: tuple[float, float] = (0.75, 1.5),
        context_block: tuple[tuple[float, float], tuple[float, float]] = ((0.85, 1.0), (1.0, 1.0)),
        min_keep: int = 10,
        max_attempts: int = 20,
    ) -> None:
        if not 1 <= num_levels <= 8:
            raise ConfigError(f"num_levels must be between 1 and 8, got {num_levels}")
        counts = [num_targets] if isinstance(num_targets, int) else list(num_targets)
        if not counts:
            raise ConfigError("num_targets must be an int or a non-empty per-level list")
        counts = (counts + [counts[-1]] * num_levels)[:num_levels]  # the last value repeats
        base = check_range("target_scale", target_scale, 0.0, 1.0)
        aspect = check_range("target_aspect", target_aspect, 0.0)
        scales = level_scales(base, num_levels, scale_progression, scale_factor)
        self.scale_progression = scale_progression
        self.scale_factor = scale_factor
        super().__init__(
            grid_size,
            levels=[LevelBlocks(2**k, int(counts[k]), scales[k], aspect) for k in range(num_levels)],
            output_levels=list(range(num_levels)),
            context_scale=context_block[0],
            context_aspect=context_block[1],
            min_keep=min_keep,
            max_attempts=max_attempts,
        )

    @classmethod
    def from_config(
        cls, cfg: MaskConfig, grid_size: int | tuple[int, int], num_levels: int
    ) -> HierarchicalMaskGenerator:
        return cls(
            grid_size,
            num_levels=num_levels,
            num_targets=cfg.num_targets,
            target_scale=cfg.target_scale,
            scale_progression=cfg.scale_progression,
            scale_factor=cfg.scale_factor,
            target_aspect=cfg.target_aspect,
            context_block=(cfg.context_scale, cfg.context_aspect),
            min_keep=cfg.min_keep,
            max_attempts=cfg.max_attempts,
        )
