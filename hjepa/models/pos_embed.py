"""Fixed 2-D sine-cosine positional embeddings (as I-JEPA and MAE use): no parameters to learn or to drift."""

from __future__ import annotations

import torch


def sincos_2d(embed_dim: int, grid: tuple[int, int]) -> torch.Tensor:
    """``[grid_h * grid_w, embed_dim]`` embeddings in raster order; half the channels encode rows, half columns."""
    if embed_dim % 4:
        raise ValueError(f"sin-cos positional embedding needs a width divisible by 4, got {embed_dim}")
    grid_h, grid_w = grid
    rows, cols = torch.meshgrid(
        torch.arange(grid_h, dtype=torch.float64), torch.arange(grid_w, dtype=torch.float64), indexing="ij"
    )
    quarter = embed_dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    parts = []
    for coord in (rows.reshape(-1), cols.reshape(-1)):
        angles = coord[:, None] * omega[None, :]
        parts += [angles.sin(), angles.cos()]
    return torch.cat(parts, dim=1).float()
