"""``BlockMaskGenerator``: batched sampling shared by the multi-block and hierarchical masks (docs/internals.md).

Contexts are cut to equal length by random subsets: I-JEPA truncates, which biases them upwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from hjepa.config import ConfigError
from hjepa.masks.batch import MaskBatch
from hjepa.masks.blocks import Placements, check_range, sample_block_size


@dataclass(frozen=True)
class LevelBlocks:
    """``num_targets`` blocks aligned to ``cell x cell`` patches, ``scale`` of the grid, aspect ``h / w``."""

    cell: int
    num_targets: int
    scale: tuple[float, float]
    aspect: tuple[float, float]


def parse_grid(grid_size: int | Sequence[int]) -> tuple[int, int]:
    """``14`` or ``(14, 14)`` -> ``(14, 14)``."""
    if isinstance(grid_size, int):
        grid = (grid_size, grid_size)
    else:
        grid = tuple(grid_size)  # type: ignore[assignment]
    if len(grid) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in grid):
        raise ValueError(f"grid_size must be an int or a (grid_h, grid_w) pair of ints, got {grid_size!r}")
    if grid[0] < 2 or grid[1] < 2:
        raise ConfigError(f"the patch grid must be at least 2x2 to hold a context and a target, got {grid}")
    return grid


class BlockMaskGenerator:
    """A :class:`MaskBatch`: one context block, and block set ``output_levels[k]`` as level ``k``'s targets.

    The same seed gives the same batch; tensors are made on the CPU, in the data pipeline.
    """

    def __init__(
        self,
        grid_size: int | tuple[int, int],
        levels: Sequence[LevelBlocks],
        output_levels: Sequence[int],
        context_scale: tuple[float, float] = (0.85, 1.0),
        context_aspect: tuple[float, float] = (1.0, 1.0),
        min_keep: int = 10,
        max_attempts: int = 20,
    ) -> None:
        self.grid = parse_grid(grid_size)
        self.num_patches = self.grid[0] * self.grid[1]
        if not levels or not output_levels or any(not 0 <= j < len(levels) for j in output_levels):
            raise ConfigError(f"output_levels {list(output_levels)} must index the {len(levels)} block sets")
        for blocks in levels:
            if self.grid[0] % blocks.cell or self.grid[1] % blocks.cell:
                raise ConfigError(
                    f"grid {self.grid} is not divisible by {blocks.cell}: blocks aligned to {blocks.cell}x"
                    f"{blocks.cell} cells need grid sides that are multiples of {blocks.cell} (use fewer levels "
                    "or another image / patch size)"
                )
            if (self.grid[0] // blocks.cell) * (self.grid[1] // blocks.cell) < 2:
                raise ConfigError(
                    f"grid {self.grid} has a single {blocks.cell}x{blocks.cell} cell: a target there would cover "
                    "the whole image; use fewer levels or a larger grid"
                )
            if blocks.num_targets < 1:
                raise ConfigError(f"num_targets must be >= 1 on every level, got {blocks.num_targets}")
        self.levels = list(levels)
        self.output_levels = list(output_levels)
        self.context_scale = check_range("context_scale", context_scale, 0.0, 1.0)
        self.context_aspect = check_range("context_aspect", context_aspect, 0.0)
        if not 0 <= min_keep < self.num_patches:
            raise ConfigError(f"min_keep must be in [0, {self.num_patches}) for grid {self.grid}, got {min_keep}")
        if max_attempts < 0:
            raise ConfigError(f"max_attempts must be >= 0, got {max_attempts}")
        self.min_keep = int(min_keep)
        self.max_attempts = int(max_attempts)
        self.num_fallbacks = 0  # step 4a/4b samples, for monitoring
        self._placement_cache: dict[tuple[tuple[int, int], int], Placements] = {}

    @property
    def num_levels(self) -> int:
        return len(self.output_levels)

    def __repr__(self) -> str:
        sets = ", ".join(f"{b.num_targets}x cell={b.cell} scale={b.scale} aspect={b.aspect}" for b in self.levels)
        return (
            f"{type(self).__name__}(grid={self.grid}, levels={self.output_levels}, blocks=[{sets}], "
            f"context_scale={self.context_scale}, min_keep={self.min_keep})"
        )

    def _placements(self, size: tuple[int, int], cell: int) -> Placements:
        # sizes come from a small set: build each table once
        key = (size, cell)
        if key not in self._placement_cache:
            self._placement_cache[key] = Placements(size, cell, self.grid)
        return self._placement_cache[key]

    def _draw(
        self, n: int, placements: list[Placements], context: Placements, generator: torch.Generator | None
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Placement ids: ``[n, T]`` per block set, ``[n]`` for the context."""
        ids = [p.sample((n, blocks.num_targets), generator) for p, blocks in zip(placements, self.levels, strict=True)]
        return ids, context.sample((n,), generator)

    @staticmethod
    def _rasterize(
        placements: list[Placements], ids: list[torch.Tensor], context: Placements, context_ids: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Targets bool ``[n, T, N]`` per set; context ``[n, N]`` = block minus targets."""
        targets = [p.rasterize(i) for p, i in zip(placements, ids, strict=True)]
        return targets, context.rasterize(context_ids) & ~_union(targets)

    def __call__(self, batch_size: int, generator: torch.Generator | None = None) -> MaskBatch:
        """Masks for ``batch_size`` samples; all randomness from ``generator`` (None: global)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        # Step 1. Block sizes, once per batch, in multiples of each set's cell
        placements = []
        for blocks in self.levels:
            coarse = (self.grid[0] // blocks.cell, self.grid[1] // blocks.cell)
            h, w = sample_block_size(coarse, blocks.scale, blocks.aspect, generator, allow_full=False)
            placements.append(self._placements((h * blocks.cell, w * blocks.cell), blocks.cell))
        context_size = sample_block_size(self.grid, self.context_scale, self.context_aspect, generator, True)
        context_placements = self._placements(context_size, 1)

        # Step 2. Positions for every sample at once; Step 3. context = block minus targets
        ids, context_ids = self._draw(batch_size, placements, context_placements, generator)
        targets, context = self._rasterize(placements, ids, context_placements, context_ids)
        counts = context.sum(dim=1)

        # Step 4. Redraw every short context at once, per round
        for _ in range(self.max_attempts):
            short = (counts < self.min_keep).nonzero().squeeze(1)
            if short.numel() == 0:
                break
            new_ids, new_context_ids = self._draw(short.numel(), placements, context_placements, generator)
            new_targets, new_context = self._rasterize(placements, new_ids, context_placements, new_context_ids)
            for old, new in zip(ids + targets, new_ids + new_targets, strict=True):
                old[short] = new
            context[short] = new_context
            counts[short] = new_context.sum(dim=1)
        short = (counts < self.min_keep).nonzero().squeeze(1)
        if short.numel() > 0:
            self._fallback(short, placements, ids, targets, context)

        # Step 5. Same length K for every sample: a random K-subset of each context
        context, context_idx = subsample_context(context, generator)
        target_idx = [p.block_indices(i) for p, i in zip(placements, ids, strict=True)]
        return MaskBatch(
            context=context,
            context_idx=context_idx,
            targets=[targets[j] for j in self.output_levels],
            target_idx=[target_idx[j] for j in self.output_levels],
            target_shapes=[placements[j].size for j in self.output_levels],
            grid=self.grid,
        )

    def _fallback(
        self,
        short: torch.Tensor,
        placements: list[Placements],
        ids: list[torch.Tensor],
        targets: list[torch.Tensor],
        context: torch.Tensor,
    ) -> None:
        """Step 4a/4b for the samples ``short`` ``[n]``, in place."""
        self.num_fallbacks += short.numel()
        # 4a. The context is everything that is not a target
        free = ~_union([masks[short] for masks in targets])
        context[short] = free
        still_short = short[free.sum(dim=1) < self.min_keep]
        if still_short.numel() == 0:
            return
        # 4b. Stack all blocks top-left; the bottom-right token stays free
        for p, level_ids, masks in zip(placements, ids, targets, strict=True):
            level_ids[still_short] = 0
            masks[still_short] = p.rasterize(level_ids[still_short])
        context[still_short] = ~_union([masks[still_short] for masks in targets])


def _union(targets: list[torch.Tensor]) -> torch.Tensor:
    """bool ``[n, T_k, N]`` per set -> ``[n, N]``: inside any block."""
    # note: any(dim=1) on a middle dim is ~10x slower on CPU
    union = targets[0][:, 0].clone()
    for masks in targets:
        for t in range(masks.shape[1]):
            union |= masks[:, t]
    return union


_INT32_MAX = 2**31 - 1  # np.iinfo costs 0.1 ms per call


def subsample_context(context: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """A random ``K``-subset of each row of ``context`` bool ``[B, N]``, K the smallest row sum.

    Returns mask ``[B, N]`` and ascending indices ``[B, K]``: each row keeps its K smallest distinct int32 keys
    ``random * N + column``, in numpy (its small-row partition is ~10x torch's on the CPU).
    """
    batch, n = context.shape
    flags = context.numpy()
    counts = flags.sum(axis=1)
    keep = int(counts.min())
    if keep == 0:
        flags = np.zeros_like(flags)
    elif (counts > keep).any():
        flat = np.flatnonzero(flags)  # np.nonzero's (rows, cols) costs 5x more
        # keys stay below the sentinel: (high - 1) * n + n - 1 < 2**31 - 1 - n
        high = (2**31 - 1) // n - 1
        random = torch.randint(0, high, (flat.size,), generator=generator, dtype=torch.int32).numpy()
        keys = np.full(batch * n, _INT32_MAX, dtype=np.int32)
        keys[flat] = random * n + (flat % n).astype(np.int32)
        keys = keys.reshape(batch, n)
        flags = keys <= np.partition(keys, keep - 1, axis=1)[:, keep - 1 : keep]
    # row-major: each row's K indices come out ascending
    indices = np.flatnonzero(flags).reshape(batch, keep) - np.arange(batch)[:, None] * n
    return torch.from_numpy(flags), torch.from_numpy(indices).long()
