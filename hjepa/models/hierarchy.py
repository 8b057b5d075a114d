"""Hierarchy levels: level k average-pools 2^k x 2^k windows of the patch grid; one projection head per level.

With ``model.level_heads=merge`` (multi-view objective) a level-k head is a :class:`MergeHead` instead: it merges each
window's tokens (concatenated, so where each token sits is kept) into one token and lets the level's cells attend to
one another, so a level is more than an average of the level below.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.vision_transformer import Block

from hjepa.config import ConfigError
from hjepa.models.vit import select_attention


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


class MergeHead(nn.Module):
    """Level-k head over the level-0 tokens: each ``2^k x 2^k`` window concatenated in raster order, LayerNorm,
    Linear to ``D``, one transformer block over the level's cells, then the parameter-free level norm:
    ``forward(tokens [B, H*W, D], grid (H, W)) -> [B, (H/2^k)*(W/2^k), D]`` (Swin's patch merging, one level at a
    time from level 0). The Linear starts as the window mean, so an untrained head is the pooled level plus a block.
    """

    pools = True  # takes the level-0 tokens and their grid, not pooled tokens

    def __init__(self, embed_dim: int, level: int, num_heads: int) -> None:
        super().__init__()
        if level < 1:
            raise ValueError(f"a merge head merges windows of level 0; level {level} has none")
        self.window = 2**level
        width = self.window**2 * embed_dim
        self.merge_norm = nn.LayerNorm(width)
        self.merge = nn.Linear(width, embed_dim)
        with torch.no_grad():
            self.merge.weight.copy_(torch.eye(embed_dim).repeat(1, self.window**2) / self.window**2)
            self.merge.bias.zero_()
        self.block = Block(embed_dim, num_heads, mlp_ratio=4.0, qkv_bias=True)
        self._fused_default = [self.block.attn.fused_attn]
        self.norm = nn.LayerNorm(embed_dim, elementwise_affine=False)
        self.out_features = embed_dim

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        if not torch.jit.is_tracing() and not torch.compiler.is_compiling():
            select_attention([self.block.attn], self._fused_default, tokens.device)  # as the encoder's blocks
        batch, _, dim = tokens.shape
        s, (height, width) = self.window, grid
        x = tokens.reshape(batch, height // s, s, width // s, s, dim).permute(0, 1, 3, 2, 4, 5)
        x = x.reshape(batch, (height // s) * (width // s), s * s * dim)
        return self.norm(self.block(self.merge(self.merge_norm(x))))


def apply_head(head: nn.Module, tokens: torch.Tensor, grid: tuple[int, int], level: int) -> torch.Tensor:
    """Level-``level`` tokens ``[B, N_k, D_h]`` from the level-0 tokens ``[B, H*W, D]``: the head on the pooled
    tokens, or a merging head (``MergeHead``) on the level-0 tokens themselves."""
    if getattr(head, "pools", False):
        return head(tokens, grid)
    return head(pool_tokens(tokens, grid, level))
