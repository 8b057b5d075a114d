"""Transformer predictor: context tokens + learnable mask tokens at the target positions -> predicted tokens."""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.models.vision_transformer import Block

from hjepa.models.pos_embed import sincos_2d
from hjepa.registry import Registry

PREDICTORS = Registry("predictor")


def gather_tokens(tokens: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``tokens [B, N, D]`` gathered at ``idx [B, M]`` -> ``[B, M, D]``."""
    return torch.gather(tokens, 1, idx.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


@PREDICTORS.register("transformer")
class TransformerPredictor(nn.Module):
    """A narrow ViT (width ``predictor_dim``) over [context; mask tokens], as in I-JEPA.

    Each target block is predicted in its own sequence: the context is repeated once per block, so a batch of
    ``B`` images with ``T`` blocks of ``M`` tokens becomes ``[B * T, K + M, P]``. Each hierarchy level has its own
    learnable mask token so the predictor knows which level's block it is filling in.
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
        **_: object,
    ) -> None:
        super().__init__()
        self.embed = nn.Linear(embed_dim, predictor_dim)
        self.mask_tokens = nn.Parameter(torch.zeros(num_levels, predictor_dim))
        nn.init.trunc_normal_(self.mask_tokens, std=0.02)
        self.register_buffer("pos_embed", sincos_2d(predictor_dim, grid)[None], persistent=False)
        rates = torch.linspace(0, drop_path, depth).tolist()
        self.blocks = nn.ModuleList(
            Block(predictor_dim, num_heads, mlp_ratio=4.0, qkv_bias=True, drop_path=r) for r in rates
        )
        self.norm = nn.LayerNorm(predictor_dim)
        self.proj = nn.Linear(predictor_dim, embed_dim)

    def forward(
        self, context: torch.Tensor, context_idx: torch.Tensor, target_idx: torch.Tensor, level: int = 0
    ) -> torch.Tensor:
        """context ``[B, K, D]``, context_idx ``[B, K]``, target_idx ``[B, T, M]`` -> predictions ``[B*T, M, D]``."""
        batch, num_blocks, block_len = target_idx.shape
        pos = self.pos_embed.expand(batch, -1, -1).to(context.dtype)
        x = self.embed(context) + gather_tokens(pos, context_idx)  # [B, K, P]
        x = x.repeat_interleave(num_blocks, dim=0)  # [B*T, K, P]
        flat_idx = target_idx.reshape(batch * num_blocks, block_len)
        pos_bt = pos.repeat_interleave(num_blocks, dim=0)
        queries = self.mask_tokens[level].to(x.dtype) + gather_tokens(pos_bt, flat_idx)  # [B*T, M, P]
        x = torch.cat([x, queries], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.proj(self.norm(x[:, -block_len:]))
