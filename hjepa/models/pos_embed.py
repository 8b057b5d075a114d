"""Fixed 2-D sine-cosine positional embeddings (as I-JEPA and MAE use): no parameters to learn or to drift."""

from __future__ import annotations

import torch


def sincos_2d(embed_dim: int, grid: tuple[int, int], span: tuple[int, int] | None = None) -> torch.Tensor:
    """``[grid_h * grid_w, embed_dim]`` embeddings in raster order; half the channels encode rows, half columns.

    ``span``: the grid whose extent these positions cover. A smaller view of the whole image (a multi-crop local
    view at 16 px on a model trained at 32 px) gets its cell centres spread over the full grid's coordinate range
    (``(i + 0.5) * span / grid - 0.5``), as DINO interpolates its position table; ``span == grid`` (the default)
    gives the integer coordinates 0..grid-1 exactly.
    """
    if embed_dim % 4:
        raise ValueError(f"sin-cos positional embedding needs a width divisible by 4, got {embed_dim}")
    grid_h, grid_w = grid
    span_h, span_w = span or grid

    def coords(count: int, extent: int) -> torch.Tensor:
        if count == extent:
            return torch.arange(count, dtype=torch.float64)
        return (torch.arange(count, dtype=torch.float64) + 0.5) * (extent / count) - 0.5

    rows, cols = torch.meshgrid(coords(grid_h, span_h), coords(grid_w, span_w), indexing="ij")
    quarter = embed_dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    parts = []
    for coord in (rows.reshape(-1), cols.reshape(-1)):
        angles = coord[:, None] * omega[None, :]
        parts += [angles.sin(), angles.cos()]
    return torch.cat(parts, dim=1).float()
