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

    ``forward(images [B, C, H, W], token_idx [B, K] | None) -> tokens [B, K or N, D]``. Images of another size
    than ``img_size`` (multi-crop local views) are accepted when their sides are multiples of the patch size; their
    positions are the sin-cos table spread over the same extent as the full grid (see ``sincos_2d``'s ``span``).
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
        self.vit.patch_embed.strict_img_size = False  # local views are smaller; forward checks divisibility
        self.patch_size = cfg.patch_size
        self.register_buffer("pos_embed", sincos_2d(dim, self.grid)[None], persistent=False)
        self._other_grids: dict[tuple[int, int], torch.Tensor] = {}

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    def positions(self, height: int, width: int) -> torch.Tensor:
        """``[1, N, D]`` position table for an image of ``height x width`` pixels."""
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(f"image size {height}x{width} is not a multiple of the patch size {self.patch_size}")
        grid = (height // self.patch_size, width // self.patch_size)
        if grid == self.grid:
            return self.pos_embed
        table = self._other_grids.get(grid)
        if table is None or table.device != self.pos_embed.device:
            table = sincos_2d(self.embed_dim, grid, span=self.grid)[None].to(self.pos_embed.device)
            self._other_grids[grid] = table
        return table

    def forward(self, images: torch.Tensor, token_idx: torch.Tensor | None = None) -> torch.Tensor:
        x = self.vit.patch_embed(images)  # [B, N, D]
        x = x + self.positions(images.shape[-2], images.shape[-1]).to(x.dtype)
        if token_idx is not None:
            x = torch.gather(x, 1, token_idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        x = self.vit.blocks(x)
        return self.vit.norm(x)
