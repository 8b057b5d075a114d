"""Transformer predictor: context tokens + learnable mask tokens at the target positions -> predicted tokens."""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.models.vision_transformer import Block

from hjepa.masks.queries import QueryLayout
from hjepa.models.packed import packed_block
from hjepa.models.pos_embed import sincos_2d
from hjepa.registry import Registry

PREDICTORS = Registry("predictor")


def gather_tokens(tokens: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``tokens [B, N, D]`` gathered at ``idx [B, M]`` -> ``[B, M, D]``."""
    return torch.gather(tokens, 1, idx.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


@PREDICTORS.register("transformer")
class TransformerPredictor(nn.Module):
    """A narrow ViT (width P) over [context; mask tokens], as I-JEPA's.

    Mask tokens carry a position and their level, never target content, so blocks can share a sequence unleaked.
    """

    def __init__(
        self,
        embed_dim: int,
        grid: tuple[int, int],
        num_levels: int = 1,
        predictor_dim: int = 96,
        depth: int = 4,
        num_heads: int = 4,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.embed = nn.Linear(embed_dim, predictor_dim)
        self.mask_tokens = nn.Parameter(torch.zeros(num_levels, predictor_dim))
        nn.init.trunc_normal_(self.mask_tokens, std=0.02)
        self.register_buffer("pos_embed", sincos_2d(predictor_dim, grid)[None], persistent=False)
        rates = torch.linspace(0, drop_path, depth).tolist()
        self.blocks = nn.ModuleList(self.make_block(predictor_dim, num_heads, r) for r in rates)
        self.norm = nn.LayerNorm(predictor_dim)
        self.proj = nn.Linear(predictor_dim, embed_dim)

    @staticmethod
    def make_block(dim: int, num_heads: int, drop_path: float) -> nn.Module:
        return Block(dim, num_heads, mlp_ratio=4.0, qkv_bias=True, drop_path=drop_path)

    def forward(
        self, context: torch.Tensor, context_idx: torch.Tensor, target_idx: torch.Tensor, target_level: torch.Tensor
    ) -> torch.Tensor:
        """context ``[B, K, D]`` at ``context_idx [B, K]``, queries at ``target_idx [B, Q]`` -> ``[B, Q, D]``.

        The caller groups queries: every block of an image in one sequence ("joint") or I-JEPA's "per_block".
        """
        batch, num_queries = target_idx.shape
        pos = self.pos_embed.expand(batch, -1, -1).to(context.dtype)  # [B, N, P]
        x = self.embed(context) + gather_tokens(pos, context_idx)  # [B, K, P]
        queries = self.mask_tokens[target_level].to(x.dtype) + gather_tokens(pos, target_idx)  # [B, Q, P]
        x = torch.cat([x, queries], dim=1)  # [B, K + Q, P]
        for block in self.blocks:
            x = block(x)  # [B, K + Q, P]
        return self.proj(self.norm(x[:, -num_queries:]))  # [B, Q, P] -> [B, Q, D]

    def forward_packed(self, context: torch.Tensor, context_idx: torch.Tensor, layout: QueryLayout) -> torch.Tensor:
        """``forward``'s joint ``[B, Q, D]``, each distinct query once, no padding in the per-token layers."""
        batch, num_context, _ = context.shape
        length = num_context + layout.num_queries
        pos = self.pos_embed[0].to(context.dtype)
        x = self.embed(context) + pos[context_idx]  # [B, K, P]
        queries = self.mask_tokens[layout.levels].to(x.dtype) + pos[layout.positions]  # [B, U, P]
        x = torch.cat([x, queries], dim=1).flatten(0, 1)[layout.rows]  # [T, P]: the real tokens
        sample = torch.div(layout.rows, length, rounding_mode="floor")
        for i, block in enumerate(self.blocks):
            keep = layout.query_rows if i == len(self.blocks) - 1 else None  # last block: only queries' MLP
            x, sample = packed_block(block, x, layout, batch, length, sample, keep)
        if not len(self.blocks):
            x = x[layout.query_rows]
        return self.proj(self.norm(x))[layout.inverse]  # [T_q, D] -> [B, Q, D]
