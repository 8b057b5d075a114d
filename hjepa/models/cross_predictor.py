"""Cross-attention predictor: the queries attend to the context, never to each other, and the context is not updated.

The transformer predictor runs every context token through every block although only the queries' outputs are used;
here each block projects the (fixed) context to keys and values and updates only the queries, as CrossMAE's decoder
does (Fu et al., 2024, "Rethinking Patch Dependence for Masked Autoencoders"). Same width, depth and heads as the
transformer predictor, about the same parameters, and per block ``10 d^2`` FLOPs per query plus ``2 d^2`` per context
token instead of ``12 d^2`` per token of both. Queries are independent given the context, so duplicate queries (blocks
overlap) are computed once with no correction, and ``per_block`` and joint batching give the same predictions.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, Mlp

from hjepa.config import ConfigError
from hjepa.masks.queries import QueryLayout
from hjepa.models.packed import drop_path_rows
from hjepa.models.predictor import PREDICTORS, TransformerPredictor, gather_tokens


class CrossBlock(nn.Module):
    """Pre-norm cross-attention (queries -> context) and MLP, both residual, on the queries only."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"predictor width {dim} is not divisible by {num_heads} heads")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.norm_query, self.norm_context = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """queries ``x [B, Q, P]``, context ``[B, K, P]`` -> updated queries ``[B, Q, P]``."""
        x = x + self.drop_path(self.attend(self.norm_query(x), context))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def attend(self, q: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        batch, length, dim = q.shape
        q = self.q(q).view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)
        k, v = self.kv(self.norm_context(context)).view(batch, -1, 2, self.num_heads, self.head_dim).permute(
            2, 0, 3, 1, 4
        )
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, length, dim))


@PREDICTORS.register("cross")
class CrossAttentionPredictor(TransformerPredictor):
    """The transformer predictor's inputs, outputs and parameters, with :class:`CrossBlock` blocks (see module doc)."""

    @staticmethod
    def make_block(dim: int, num_heads: int, drop_path: float) -> nn.Module:
        return CrossBlock(dim, num_heads, drop_path=drop_path)

    def _context(self, context: torch.Tensor, context_idx: torch.Tensor) -> torch.Tensor:
        pos = self.pos_embed.expand(context.shape[0], -1, -1).to(context.dtype)
        return self.embed(context) + gather_tokens(pos, context_idx)  # [B, K, P]

    def forward(
        self, context: torch.Tensor, context_idx: torch.Tensor, target_idx: torch.Tensor, target_level: torch.Tensor
    ) -> torch.Tensor:
        ctx = self._context(context, context_idx)
        pos = self.pos_embed.expand(context.shape[0], -1, -1).to(ctx.dtype)
        x = self.mask_tokens[target_level].to(ctx.dtype) + gather_tokens(pos, target_idx)  # [B, Q, P]
        for block in self.blocks:
            x = block(x, ctx)
        return self.proj(self.norm(x))

    def forward_packed(self, context: torch.Tensor, context_idx: torch.Tensor, layout: QueryLayout) -> torch.Tensor:
        """Each distinct query once; the per-token layers see only real queries, attention the padded ``[B, U]``."""
        ctx = self._context(context, context_idx)
        batch, width = layout.positions.shape
        pos = self.pos_embed[0].to(ctx.dtype)
        slots = layout.query_slots
        sample = torch.div(slots, width, rounding_mode="floor")  # each packed query's image, for stochastic depth
        x = (self.mask_tokens[layout.levels].to(ctx.dtype) + pos[layout.positions]).flatten(0, 1)[slots]  # [T_q, P]
        for block in self.blocks:
            normed = block.norm_query(x)
            padded = normed.new_zeros(batch * width, normed.shape[-1]).index_copy(0, slots, normed)
            attended = block.attend(padded.view(batch, width, -1), ctx).flatten(0, 1)[slots]
            x = x + drop_path_rows(block.drop_path, attended, sample, batch)
            x = x + drop_path_rows(block.drop_path, block.mlp(block.norm2(x)), sample, batch)
        return self.proj(self.norm(x))[layout.inverse]  # [T_q, D] -> [B, Q, D]

