"""ViT encoder built from timm's ``VisionTransformer``; runs on a subset of tokens gathered by index.

The context encoder of I-JEPA sees only the kept context tokens, so its cost scales with the context size instead of
the full grid; zeroing masked patches and running the whole sequence would waste most of the compute.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.models.vision_transformer import VisionTransformer

from hjepa.config import ModelConfig
from hjepa.models.pos_embed import sincos_2d

# (embed_dim, depth, num_heads) of the standard ViT sizes.
VIT_SIZES: dict[str, tuple[int, int, int]] = {
    "vit_tiny": (192, 12, 3),
    "vit_small": (384, 12, 6),
    "vit_base": (768, 12, 12),
    "vit_large": (1024, 24, 16),
}


def vit_dims(cfg: ModelConfig) -> tuple[int, int, int]:
    """Resolve (embed_dim, depth, num_heads) from the size name and any explicit overrides."""
    if cfg.encoder == "custom":
        if None in (cfg.embed_dim, cfg.depth, cfg.num_heads):
            raise ValueError("model.encoder=custom needs model.embed_dim, model.depth and model.num_heads")
        base = (cfg.embed_dim, cfg.depth, cfg.num_heads)
    elif cfg.encoder in VIT_SIZES:
        base = VIT_SIZES[cfg.encoder]
    else:
        raise ValueError(f"unknown encoder {cfg.encoder!r}; valid: {', '.join([*VIT_SIZES, 'custom'])}")
    dim = cfg.embed_dim or base[0]
    depth = cfg.depth or base[1]
    heads = cfg.num_heads or base[2]
    if dim % heads:
        raise ValueError(f"model.embed_dim={dim} is not divisible by model.num_heads={heads}")
    return dim, depth, heads


def grid_size(cfg: ModelConfig) -> tuple[int, int]:
    if cfg.img_size % cfg.patch_size:
        raise ValueError(f"model.img_size={cfg.img_size} is not divisible by model.patch_size={cfg.patch_size}")
    side = cfg.img_size // cfg.patch_size
    return side, side


class ViTEncoder(nn.Module):
    """Patch embedding + fixed sin-cos positions + timm transformer blocks + final norm.

    ``forward(images [B, C, H, W], token_idx [B, K] | None) -> tokens [B, K or N, D]``.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        dim, depth, heads = vit_dims(cfg)
        self.grid = grid_size(cfg)
        self.embed_dim = dim
        # No class token and no classifier: JEPA encoders output patch tokens. No weights are downloaded.
        self.vit = VisionTransformer(
            img_size=cfg.img_size,
            patch_size=cfg.patch_size,
            in_chans=cfg.in_chans,
            num_classes=0,
            global_pool="",  # "avg" would swap the final norm for an fc_norm we never use
            embed_dim=dim,
            depth=depth,
            num_heads=heads,
            class_token=False,
            pos_embed="none",
            drop_path_rate=cfg.drop_path_rate,
        )
        self.register_buffer("pos_embed", sincos_2d(dim, self.grid)[None], persistent=False)

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    def forward(self, images: torch.Tensor, token_idx: torch.Tensor | None = None) -> torch.Tensor:
        x = self.vit.patch_embed(images)  # [B, N, D]
        x = x + self.pos_embed.to(x.dtype)
        if token_idx is not None:
            x = torch.gather(x, 1, token_idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        x = self.vit.blocks(x)
        return self.vit.norm(x)
