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
    """A narrow ViT (width ``predictor_dim``) over [context; mask tokens], as in I-JEPA.

    Mask tokens carry only positions (and a learnable per-level token, so the predictor knows which level's block it
    fills in), never target content, so several blocks can share one sequence without leaking the answer.
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
        """context ``[B, K, D]``, context_idx ``[B, K]``, target_idx ``[B, Q]`` with each query's hierarchy level
        ``target_level [Q]`` -> predictions ``[B, Q, D]``.

        The caller decides how queries are grouped into sequences: all blocks of an image in one sequence ("joint")
        or one sequence per block with the context repeated (I-JEPA's "per_block"). ``forward_packed`` computes
        "joint" with each distinct query once.
        """
        batch, num_queries = target_idx.shape
        pos = self.pos_embed.expand(batch, -1, -1).to(context.dtype)
        x = self.embed(context) + gather_tokens(pos, context_idx)  # [B, K, P]
        queries = self.mask_tokens[target_level].to(x.dtype) + gather_tokens(pos, target_idx)  # [B, Q, P]
        x = torch.cat([x, queries], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.proj(self.norm(x[:, -num_queries:]))

    def forward_packed(self, context: torch.Tensor, context_idx: torch.Tensor, layout: QueryLayout) -> torch.Tensor:
        """The joint forward (one sequence per image) with duplicate queries computed once and no padding in the
        per-token layers; the same ``[B, Q, D]`` as ``forward`` with ``layout``'s queries, within float rounding.
        In the last block only the queries, whose outputs are used, pay for the projection and the MLP."""
        batch, num_context, _ = context.shape
        length = num_context + layout.num_queries
        pos = self.pos_embed[0].to(context.dtype)
        x = self.embed(context) + pos[context_idx]  # [B, K, P]
        queries = self.mask_tokens[layout.levels].to(x.dtype) + pos[layout.positions]  # [B, U, P]
        x = torch.cat([x, queries], dim=1).flatten(0, 1)[layout.rows]  # [T, P]: the real tokens
        sample = torch.div(layout.rows, length, rounding_mode="floor")
        for i, block in enumerate(self.blocks):
            keep = layout.query_rows if i == len(self.blocks) - 1 else None
            x, sample = packed_block(block, x, layout, batch, length, sample, keep)
        if not len(self.blocks):
            x = x[layout.query_rows]
        return self.proj(self.norm(x))[layout.inverse]  # [T_q, D] -> [B, Q, D]
