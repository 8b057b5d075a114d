"""Hierarchy levels: level k average-pools 2^k x 2^k windows of the patch grid; one projection head per level."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from hjepa.config import ConfigError


def check_levels(grid: tuple[int, int], num_levels: int) -> None:
    if not 1 <= num_levels <= 4:
        raise ConfigError(f"model.num_levels must be between 1 and 4, got {num_levels}")
    factor = 2 ** (num_levels - 1)
    if grid[0] % factor or grid[1] % factor:
        raise ConfigError(
            f"patch grid {grid[0]}x{grid[1]} is not divisible by 2^{num_levels - 1}={factor}, needed for "
            f"{num_levels} levels; change model.img_size, model.patch_size or model.num_levels"
        )


def level_grid(grid: tuple[int, int], level: int) -> tuple[int, int]:
    return grid[0] >> level, grid[1] >> level


def pool_tokens(tokens: torch.Tensor, grid: tuple[int, int], level: int) -> torch.Tensor:
    """``tokens [B, H*W, D]`` in raster order -> ``[B, (H/2^k)*(W/2^k), D]`` averaged over 2^k x 2^k windows."""
    if level == 0:
        return tokens
    batch, _, dim = tokens.shape
    window = 2**level
    x = tokens.transpose(1, 2).reshape(batch, dim, grid[0], grid[1])
    x = F.avg_pool2d(x, window)
    return x.flatten(2).transpose(1, 2)


def pool_blocks(tokens: torch.Tensor, shape: tuple[int, int], level: int) -> torch.Tensor:
    """Tokens of rectangular blocks ``[B, h*w, D]`` (row-major) -> per-cell means ``[B, (h/2^k)*(w/2^k), D]``."""
    return pool_tokens(tokens, shape, level)


class TargetNorm(nn.Module):
    """Parameter-free level-k target: LayerNorm of the pooled target tokens, ``[..., D] -> [..., D]`` (as I-JEPA)."""

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(embed_dim, elementwise_affine=False)
        self.out_features = embed_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


class LevelHead(nn.Module):
    """Linear + LayerNorm projection of level-k tokens: ``[..., D] -> [..., D_head]``."""

    def __init__(self, embed_dim: int, head_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(embed_dim, head_dim)
        self.norm = nn.LayerNorm(head_dim)
        if head_dim == embed_dim:
            # start as a LayerNorm: a random projection scrambles early features and costs k-NN accuracy
            nn.init.eye_(self.proj.weight)
            nn.init.zeros_(self.proj.bias)

    @property
    def out_features(self) -> int:
        return self.proj.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))
