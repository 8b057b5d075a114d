"""Blocks on a patch grid: sizes, and every placement of a size as a lookup table.

A batch shares one size (as I-JEPA), so positions are one ``randint`` and masks are gathers: no per-sample loop.
"""

from __future__ import annotations

import math

import torch

from hjepa.config import ConfigError


def check_range(name: str, value: tuple[float, float], low: float, high: float | None = None) -> tuple[float, float]:
    """``(min, max)`` as floats, with ``low < min <= max (<= high)``."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a (min, max) pair of numbers, got {value!r}") from None
    if not (lo > low and lo <= hi and (high is None or hi <= high)):
        upper = "" if high is None else f" <= {high}"
        raise ConfigError(f"{name} must satisfy {low} < min <= max{upper}, got {value!r}")
    return lo, hi


def sample_block_size(
    grid: tuple[int, int],
    scale: tuple[float, float],
    aspect: tuple[float, float],
    generator: torch.Generator | None,
    allow_full: bool,
) -> tuple[int, int]:
    """One block size ``(h, w)`` in cells for a whole batch, as I-JEPA.

    Scale and aspect are drawn independently: I-JEPA's one draw ties large blocks to tall ones. Unless
    ``allow_full``, a block leaves something uncovered.
    """
    grid_h, grid_w = grid
    r_scale, r_aspect = torch.rand(2, generator=generator).tolist()
    block_scale = scale[0] + r_scale * (scale[1] - scale[0])
    block_aspect = aspect[0] + r_aspect * (aspect[1] - aspect[0])
    area = max(1, int(grid_h * grid_w * block_scale))
    h = min(max(1, int(round(math.sqrt(area * block_aspect)))), grid_h)
    w = min(max(1, int(round(math.sqrt(area / block_aspect)))), grid_w)
    if not allow_full and h == grid_h and w == grid_w:
        if grid_h > 1 and (grid_h >= grid_w or grid_w == 1):
            h -= 1
        else:
            w -= 1
    return h, w


class Placements:
    """Every position of an ``(h, w)`` block with its corner on the ``cell`` lattice, in raster order.

    Attributes:
        masks: bool ``[P, N]``, the block at each position.
        indices: long ``[P, h * w]``, its fine raster indices, row-major within the block.
    """

    def __init__(self, size: tuple[int, int], cell: int, grid: tuple[int, int]) -> None:
        h, w = size
        if h % cell or w % cell or grid[0] % cell or grid[1] % cell or h > grid[0] or w > grid[1]:
            raise ConfigError(f"a {h}x{w} block on a {grid[0]}x{grid[1]} grid does not fit {cell}x{cell} cells")
        self.size, self.cell, self.grid = size, cell, grid
        tops = torch.arange(0, grid[0] - h + 1, cell)
        lefts = torch.arange(0, grid[1] - w + 1, cell)
        self.num_positions = tops.numel() * lefts.numel()
        rows = torch.arange(grid[0])
        cols = torch.arange(grid[1])
        in_rows = (rows >= tops[:, None]) & (rows < tops[:, None] + h)  # [P_h, H]
        in_cols = (cols >= lefts[:, None]) & (cols < lefts[:, None] + w)  # [P_w, W]
        self.masks = (in_rows[:, None, :, None] & in_cols[None, :, None, :]).reshape(self.num_positions, -1)
        corners = (tops[:, None] * grid[1] + lefts[None, :]).reshape(-1)
        offsets = (torch.arange(h)[:, None] * grid[1] + torch.arange(w)[None, :]).reshape(-1)
        self.indices = corners[:, None] + offsets[None, :]

    def sample(self, shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
        """Uniform placement ids, long ``shape``."""
        return torch.randint(0, self.num_positions, shape, generator=generator)

    def rasterize(self, ids: torch.Tensor) -> torch.Tensor:
        """Placement ids, long ``S`` -> bool ``[*S, N]`` block masks."""
        return self.masks.index_select(0, ids.reshape(-1)).view(*ids.shape, -1)

    def block_indices(self, ids: torch.Tensor) -> torch.Tensor:
        """Placement ids, long ``S`` -> long ``[*S, h * w]`` fine indices, row-major within each block."""
        return self.indices.index_select(0, ids.reshape(-1)).view(*ids.shape, -1)
