"""timm ``Block`` forward over packed tokens: the per-token layers see only real tokens, attention a padded batch.

Used by the joint predictor with a :class:`~hjepa.masks.QueryLayout`: ``x [T, D]`` holds the real tokens of
``B`` sequences of length up to ``L`` (``layout.rows`` says where each sits in the padded ``[B * L]``), and
``layout.bias [B, L]`` is added to every attention logit (``log`` multiplicity of a distinct query, ``-inf`` for
padding). The result is the padded block's output at the real tokens, within float rounding.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.vision_transformer import Attention, Block

from hjepa.masks.queries import QueryLayout


def drop_path_rows(module: nn.Module, x: torch.Tensor, sample: torch.Tensor, batch: int) -> torch.Tensor:
    """timm's per-sample stochastic depth for packed rows: ``sample [T]`` is each row's sequence."""
    prob = float(getattr(module, "drop_prob", 0.0))
    if not module.training or prob == 0.0:
        return x
    keep = x.new_empty(batch).bernoulli_(1.0 - prob)
    if prob < 1.0 and getattr(module, "scale_by_keep", True):
        keep = keep / (1.0 - prob)
    return x * keep[sample, None]


def _attention(
    attn: Attention, x: torch.Tensor, layout: QueryLayout, batch: int, length: int, keep: torch.Tensor | None
) -> torch.Tensor:
    """Self-attention of the packed ``x [T, D]``; returns rows ``keep`` of the output (all rows when None)."""
    if getattr(attn, "gate", None) is not None:
        raise NotImplementedError("packed attention does not support gated attention")
    qkv = attn.qkv(x)
    padded = qkv.new_zeros(batch * length, qkv.shape[1]).index_copy(0, layout.rows, qkv)
    q, k, v = padded.view(batch, length, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    out = F.scaled_dot_product_attention(
        q, k, v,
        attn_mask=layout.bias[:, None, None, :].to(q.dtype),
        dropout_p=attn.attn_drop.p if attn.training else 0.0,
    )
    rows = layout.rows if keep is None else layout.rows[keep]
    out = out.transpose(1, 2).reshape(batch * length, -1)[rows]
    return attn.proj_drop(attn.proj(attn.norm(out)))


def packed_block(
    block: Block,
    x: torch.Tensor,
    layout: QueryLayout,
    batch: int,
    length: int,
    sample: torch.Tensor,
    keep: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One pre-norm block on packed ``x [T, D]``. With ``keep`` (indices into ``T``), only those rows leave the
    block, and only they pay for the output projection and the MLP. Returns ``(x, sample)`` for the rows kept."""
    attended = _attention(block.attn, block.norm1(x), layout, batch, length, keep)
    if keep is not None:
        x, sample = x[keep], sample[keep]
    x = x + drop_path_rows(block.drop_path1, block.ls1(attended), sample, batch)
    x = x + drop_path_rows(block.drop_path2, block.ls2(block.mlp(block.norm2(x))), sample, batch)
    return x, sample
