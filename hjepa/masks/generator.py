"""``BlockMaskGenerator``: the batched, vectorized sampling loop shared by the multi-block and hierarchical masks.

Per batch:

1. One block size per level (in cells of that level's ``2**k`` grid) and one context-block size, shared by every
   sample, as in I-JEPA. Sharing the size is what makes ``target_idx`` one dense tensor.
2. Top-left corners for every sample and block at once (``torch.randint(size=[B, T])``), uniform over all valid
   positions, the last row and column included, aligned to the level's cells.
3. Context = context block minus the union of every target block of every level.
4. ``min_keep``: samples whose context has fewer than ``min_keep`` tokens redraw all their block positions (sizes
   stay: they belong to the batch), vectorized over those samples, for at most ``max_attempts`` rounds. Fallback
   for samples still short, so generation always terminates:
   a. the context becomes the whole grid minus the targets;
   b. if still short, every target block of the sample is stacked in the top-left corner (blocks of one level then
      coincide, which drops them to one distinct block per level) and the context is the rest of the grid.
      A target block never covers its whole level grid, so the bottom-right token is never a target and every
      sample keeps at least one context token; the batch may then keep fewer than ``min_keep`` tokens.
5. Equal lengths: ``K`` = the smallest context count in the batch; every sample keeps a uniformly random subset of
   ``K`` of its context tokens (indices sorted ascending) and ``context`` is updated to match. I-JEPA truncates
   instead, which always drops the last tokens in raster order and so biases the context towards the top of the
   image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from hjepa.masks.batch import MaskBatch
from hjepa.masks.blocks import block_indices, check_range, rasterize_blocks, sample_block_size, sample_positions

Corners = tuple[torch.Tensor, torch.Tensor]  # (tops, lefts) in fine patches


@dataclass(frozen=True)
class LevelBlocks:
    """How one set of target blocks is drawn: ``num_targets`` blocks aligned to ``cell x cell`` fine patches, with
    a size of ``scale`` (fraction of the grid) and aspect ``h / w`` drawn from the given ranges."""

    cell: int
    num_targets: int
    scale: tuple[float, float]
    aspect: tuple[float, float]


def parse_grid(grid_size: int | Sequence[int]) -> tuple[int, int]:
    """``14`` or ``(14, 14)`` -> ``(14, 14)``; rejects anything that is not one or two positive integers."""
    if isinstance(grid_size, int):
        grid = (grid_size, grid_size)
    else:
        grid = tuple(grid_size)  # type: ignore[assignment]
    if len(grid) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in grid):
        raise ValueError(f"grid_size must be an int or a (grid_h, grid_w) pair of ints, got {grid_size!r}")
    if grid[0] < 2 or grid[1] < 2:
        raise ValueError(f"the patch grid must be at least 2x2 to hold a context and a target, got {grid}")
    return grid


class BlockMaskGenerator:
    """Samples a :class:`MaskBatch` of one context block and per-level target blocks (see the module docstring).

    ``levels`` are the distinct block sets; ``output_levels[k]`` names the set returned as level ``k`` (the
    multi-block generator returns one set for every level). Call with a batch size and an optional
    ``torch.Generator``; the same seed gives an identical batch. Tensors are made on the CPU, in the data pipeline.
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
            raise ValueError(f"output_levels {list(output_levels)} must index the {len(levels)} block sets")
        for blocks in levels:
            if self.grid[0] % blocks.cell or self.grid[1] % blocks.cell:
                raise ValueError(
                    f"grid {self.grid} is not divisible by {blocks.cell}: blocks aligned to {blocks.cell}x"
                    f"{blocks.cell} cells need grid sides that are multiples of {blocks.cell} (use fewer levels "
                    "or another image / patch size)"
                )
            if (self.grid[0] // blocks.cell) * (self.grid[1] // blocks.cell) < 2:
                raise ValueError(
                    f"grid {self.grid} has a single {blocks.cell}x{blocks.cell} cell: a target there would cover "
                    "the whole image; use fewer levels or a larger grid"
                )
            if blocks.num_targets < 1:
                raise ValueError(f"num_targets must be >= 1 on every level, got {blocks.num_targets}")
        self.levels = list(levels)
        self.output_levels = list(output_levels)
        self.context_scale = check_range("context_scale", context_scale, 0.0, 1.0)
        self.context_aspect = check_range("context_aspect", context_aspect, 0.0)
        if not 0 <= min_keep < self.num_patches:
            raise ValueError(f"min_keep must be in [0, {self.num_patches}) for grid {self.grid}, got {min_keep}")
        if max_attempts < 0:
            raise ValueError(f"max_attempts must be >= 0, got {max_attempts}")
        self.min_keep = int(min_keep)
        self.max_attempts = int(max_attempts)
        self.num_fallbacks = 0  # samples that needed the fallback (step 4a/4b), for monitoring

    @property
    def num_levels(self) -> int:
        return len(self.output_levels)

    def __repr__(self) -> str:
        sets = ", ".join(f"{b.num_targets}x cell={b.cell} scale={b.scale} aspect={b.aspect}" for b in self.levels)
        return (
            f"{type(self).__name__}(grid={self.grid}, levels={self.output_levels}, blocks=[{sets}], "
            f"context_scale={self.context_scale}, min_keep={self.min_keep})"
        )

    def _draw_corners(
        self, n: int, sizes: list[tuple[int, int]], context_size: tuple[int, int], generator: torch.Generator | None
    ) -> tuple[list[Corners], Corners]:
        """Corners for ``n`` samples: per block set long ``[n, T]`` pairs, and long ``[n]`` for the context."""
        level_corners = []
        for blocks, (h, w) in zip(self.levels, sizes, strict=True):
            cell = blocks.cell
            coarse = (self.grid[0] // cell, self.grid[1] // cell)
            tops, lefts = sample_positions(coarse, (h // cell, w // cell), (n, blocks.num_targets), generator)
            level_corners.append((tops * cell, lefts * cell))
        return level_corners, sample_positions(self.grid, context_size, (n,), generator)

    def _rasterize(
        self,
        level_corners: list[Corners],
        context_corners: Corners,
        sizes: list[tuple[int, int]],
        context_size: tuple[int, int],
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Per block set bool ``[n, T, N]`` target masks, and the bool ``[n, N]`` context (block minus targets)."""
        targets = [
            rasterize_blocks(t, left, size, self.grid) for (t, left), size in zip(level_corners, sizes, strict=True)
        ]
        union = torch.cat(targets, dim=1).any(dim=1)
        context = rasterize_blocks(*context_corners, context_size, self.grid) & ~union
        return targets, context

    def __call__(self, batch_size: int, generator: torch.Generator | None = None) -> MaskBatch:
        """Sample masks for ``batch_size`` samples; all randomness comes from ``generator`` (global RNG if None)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        # Step 1. Block sizes, once per batch: per block set in fine patches (multiples of its cell), and context.
        sizes = []
        for blocks in self.levels:
            coarse = (self.grid[0] // blocks.cell, self.grid[1] // blocks.cell)
            h, w = sample_block_size(coarse, blocks.scale, blocks.aspect, generator, allow_full=False)
            sizes.append((h * blocks.cell, w * blocks.cell))
        context_size = sample_block_size(self.grid, self.context_scale, self.context_aspect, generator, True)

        # Step 2. Positions for every sample and block at once; Step 3. context = block minus all targets.
        level_corners, context_corners = self._draw_corners(batch_size, sizes, context_size, generator)
        targets, context = self._rasterize(level_corners, context_corners, sizes, context_size)
        counts = context.sum(dim=1)

        # Step 4. Redraw positions of the samples whose context is too small, all of them in one go per round.
        for _ in range(self.max_attempts):
            short = (counts < self.min_keep).nonzero().squeeze(1)
            if short.numel() == 0:
                break
            new_corners, new_context_corners = self._draw_corners(short.numel(), sizes, context_size, generator)
            new_targets, new_context = self._rasterize(new_corners, new_context_corners, sizes, context_size)
            for (tops, lefts), (new_tops, new_lefts) in zip(level_corners, new_corners, strict=True):
                tops[short], lefts[short] = new_tops, new_lefts
            for masks, new_masks in zip(targets, new_targets, strict=True):
                masks[short] = new_masks
            context[short] = new_context
            counts[short] = new_context.sum(dim=1)
        short = (counts < self.min_keep).nonzero().squeeze(1)
        if short.numel() > 0:
            self._fallback(short, level_corners, targets, context, sizes)
            counts = context.sum(dim=1)

        # Step 5. Same length K for every sample: a uniformly random K-subset of each context, sorted.
        num_keep = int(counts.min())
        if bool((counts == num_keep).all()):
            context_idx = context.nonzero()[:, 1].view(batch_size, num_keep)  # nonzero is row-major: ascending
        else:
            scores = torch.rand(context.shape, generator=generator).masked_fill_(~context, 2.0)
            context_idx = scores.topk(num_keep, dim=1, largest=False, sorted=False).indices.sort(dim=1).values
            context = torch.zeros_like(context).scatter_(1, context_idx, True)

        target_idx = [
            block_indices(t, left, size, self.grid) for (t, left), size in zip(level_corners, sizes, strict=True)
        ]
        return MaskBatch(
            context=context,
            context_idx=context_idx,
            targets=[targets[j] for j in self.output_levels],
            target_idx=[target_idx[j] for j in self.output_levels],
            target_shapes=[sizes[j] for j in self.output_levels],
            grid=self.grid,
        )

    def _fallback(
        self,
        short: torch.Tensor,
        level_corners: list[Corners],
        targets: list[torch.Tensor],
        context: torch.Tensor,
        sizes: list[tuple[int, int]],
    ) -> None:
        """Step 4a/4b for the samples ``short`` (long ``[n]``), in place; see the module docstring."""
        self.num_fallbacks += short.numel()
        # 4a. The context is everything that is not a target.
        union = torch.cat([masks[short] for masks in targets], dim=1).any(dim=1)
        context[short] = ~union
        still_short = short[(~union).sum(dim=1) < self.min_keep]
        if still_short.numel() == 0:
            return
        # 4b. Stack all blocks in the top-left corner; the bottom-right token stays free (no block spans a level).
        for (tops, lefts), masks, size in zip(level_corners, targets, sizes, strict=True):
            tops[still_short] = 0
            lefts[still_short] = 0
            masks[still_short] = rasterize_blocks(tops[still_short], lefts[still_short], size, self.grid)
        union = torch.cat([masks[still_short] for masks in targets], dim=1).any(dim=1)
        context[still_short] = ~union
