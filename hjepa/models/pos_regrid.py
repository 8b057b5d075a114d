"""A stored position table at another image size: what an imported encoder needs for ``--img-size``.

A sin-cos table is recomputed for the new grid, in the channel order it was stored in (I-JEPA's: column sin,
column cos, row sin, row cos; or hjepa's ``sincos_2d``), so the new table is exact rather than an approximation.
Any other table was learned and is resampled bicubically, as timm and DINOv2 do (``resample_abs_pos_embed``:
prefix rows such as a class token's kept as they are).
"""

from __future__ import annotations

import torch
from timm.layers import resample_abs_pos_embed

from hjepa.models.pos_embed import sincos_2d

SINCOS_ATOL = 1e-4  # a stored sin-cos table matches its formula to float32 rounding (~1e-7)


def ijepa_sincos(embed_dim: int, grid: tuple[int, int]) -> torch.Tensor:
    """``[H * W, D]`` sin-cos positions in I-JEPA's channel order (``get_2d_sincos_pos_embed``): ``sincos_2d`` with
    its halves swapped (column sin/cos first, then row)."""
    table = sincos_2d(embed_dim, grid)
    half = embed_dim // 2
    return torch.cat([table[:, half:], table[:, :half]], dim=1)


SINCOS_LAYOUTS = {"sincos-ijepa": ijepa_sincos, "sincos-2d": sincos_2d}


def table_kind(table: torch.Tensor, grid: tuple[int, int]) -> str:
    """``"sincos-ijepa"`` / ``"sincos-2d"`` when the patch rows of ``table`` ``[1, P + N, D]`` are that formula at
    ``grid``, else ``"learned"``."""
    patch_rows = table[0, table.shape[1] - grid[0] * grid[1]:].float()
    if patch_rows.shape[-1] % 4 == 0:
        for name, formula in SINCOS_LAYOUTS.items():
            if torch.allclose(patch_rows, formula(patch_rows.shape[-1], grid), atol=SINCOS_ATOL, rtol=0):
                return name
    return "learned"


def regrid_positions(
    table: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]
) -> tuple[torch.Tensor, str]:
    """``table`` ``[1, P + H * W, D]`` (P prefix rows, e.g. a class token) for ``new_grid``; returns
    ``(new table, how)`` with ``how`` the table kind (sin-cos recomputed, learned resampled bicubically)."""
    prefix = table.shape[1] - old_grid[0] * old_grid[1]
    if prefix < 0:
        raise ValueError(f"a position table of {table.shape[1]} rows cannot hold a {old_grid[0]}x{old_grid[1]} grid")
    kind = table_kind(table, old_grid)
    if kind != "learned":
        patch_rows = SINCOS_LAYOUTS[kind](table.shape[-1], new_grid).to(table.dtype)[None]
        return torch.cat([table[:, :prefix], patch_rows], dim=1), kind
    resampled = resample_abs_pos_embed(table.float(), new_size=list(new_grid), old_size=list(old_grid),
                                       num_prefix_tokens=prefix, interpolation="bicubic", antialias=True)
    return resampled.to(table.dtype), kind
