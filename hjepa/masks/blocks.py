"""Rectangular blocks on a patch grid: size sampling, vectorized positions, rasterization and indices.

All functions work for any batch shape ``S`` (for example ``[B, T]``); every sample of a batch shares one block size,
which is what lets block indices be one dense tensor.
"""

from __future__ import annotations

import math

import torch


def check_range(name: str, value: tuple[float, float], low: float, high: float | None = None) -> tuple[float, float]:
    """Validate a ``(min, max)`` range with ``low < min <= max (<= high)``; returns it as a float tuple."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a (min, max) pair of numbers, got {value!r}") from None
    if not (lo > low and lo <= hi and (high is None or hi <= high)):
        upper = "" if high is None else f" <= {high}"
        raise ValueError(f"{name} must satisfy {low} < min <= max{upper}, got {value!r}")
    return lo, hi


def sample_block_size(
    grid: tuple[int, int],
    scale: tuple[float, float],
    aspect: tuple[float, float],
    generator: torch.Generator | None,
    allow_full: bool,
) -> tuple[int, int]:
    """Sample one block size ``(h, w)`` on ``grid``, as I-JEPA does, for a whole batch.

    The area is ``int(scale * grid_h * grid_w)`` cells (at least one) and ``h / w`` is the aspect ratio; ``scale``
    and ``aspect`` are drawn independently and uniformly from their ranges (I-JEPA reuses one draw for both, which
    ties large blocks to tall ones). ``h`` and ``w`` are clamped to the grid. Unless ``allow_full``, a block never
    covers the whole grid (the longer side loses one cell), so a target block always leaves something uncovered.
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


def sample_positions(
    grid: tuple[int, int],
    size: tuple[int, int],
    shape: tuple[int, ...],
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-left corners ``(tops, lefts)``, each long ``shape``, uniform over all ``(H - h + 1) x (W - w + 1)`` valid
    positions, the last row and column included."""
    tops = torch.randint(0, grid[0] - size[0] + 1, shape, generator=generator)
    lefts = torch.randint(0, grid[1] - size[1] + 1, shape, generator=generator)
    return tops, lefts


def rasterize_blocks(
    tops: torch.Tensor, lefts: torch.Tensor, size: tuple[int, int], grid: tuple[int, int]
) -> torch.Tensor:
    """Boolean masks of blocks: ``tops``, ``lefts`` long ``S`` (fine units) -> bool ``[*S, grid_h * grid_w]``."""
    rows = torch.arange(grid[0])
    cols = torch.arange(grid[1])
    # The outer product of a row band and a column band is the block; no scatter, no per-block loop.
    in_rows = (rows >= tops.unsqueeze(-1)) & (rows < (tops + size[0]).unsqueeze(-1))
    in_cols = (cols >= lefts.unsqueeze(-1)) & (cols < (lefts + size[1]).unsqueeze(-1))
    mask = in_rows.unsqueeze(-1) & in_cols.unsqueeze(-2)
    return mask.flatten(-2)


def block_indices(
    tops: torch.Tensor, lefts: torch.Tensor, size: tuple[int, int], grid: tuple[int, int]
) -> torch.Tensor:
    """Raster indices of blocks, row-major within each block: long ``S`` corners -> long ``[*S, h * w]``."""
    offsets = (torch.arange(size[0]).unsqueeze(1) * grid[1] + torch.arange(size[1])).flatten()
    return (tops * grid[1] + lefts).unsqueeze(-1) + offsets
