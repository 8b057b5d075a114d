"""ViT encoder from timm's blocks, run on the tokens gathered by index: I-JEPA's context encoder pays for the
context, not the full grid.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
from timm.models.vision_transformer import VisionTransformer

from hjepa.config import ConfigError, ModelConfig
from hjepa.models.pos_embed import sincos_2d

# (embed_dim, depth, num_heads), timm's sizes
VIT_SIZES: dict[str, tuple[int, int, int]] = {
    "vit_tiny": (192, 12, 3),
    "vit_small": (384, 12, 6),
    "vit_base": (768, 12, 12),
    "vit_large": (1024, 24, 16),
}


def vit_dims(cfg: ModelConfig) -> tuple[int, int, int]:
    """(embed_dim, depth, num_heads) of the size name, with explicit overrides."""
    if cfg.encoder == "custom":
        if None in (cfg.embed_dim, cfg.depth, cfg.num_heads):
            raise ConfigError("model.encoder=custom needs model.embed_dim, model.depth and model.num_heads")
        base = (cfg.embed_dim, cfg.depth, cfg.num_heads)
    elif cfg.encoder in VIT_SIZES:
        base = VIT_SIZES[cfg.encoder]
    else:
        raise ConfigError(f"unknown encoder {cfg.encoder!r}; valid: {', '.join([*VIT_SIZES, 'custom'])}")
    dim = cfg.embed_dim or base[0]
    depth = cfg.depth or base[1]
    heads = cfg.num_heads or base[2]
    if dim % heads:
        raise ConfigError(f"model.embed_dim={dim} is not divisible by model.num_heads={heads}")
    return dim, depth, heads


def select_attention(modules: list[nn.Module], defaults: list[bool], device: torch.device) -> None:
    """timm attention ``modules`` run explicit (``fused_attn=False``) for bf16 training on a CPU, their ``defaults``
    otherwise (see ``ViTEncoder.select_attention``)."""
    explicit = device.type == "cpu" and torch.is_grad_enabled() and torch.is_autocast_enabled("cpu")
    for module, default in zip(modules, defaults, strict=True):
        module.fused_attn = default and not explicit


def grid_size(cfg: ModelConfig) -> tuple[int, int]:
    if cfg.img_size % cfg.patch_size:
        raise ConfigError(f"model.img_size={cfg.img_size} is not divisible by model.patch_size={cfg.patch_size}")
    side = cfg.img_size // cfg.patch_size
    return side, side


class ViTEncoder(nn.Module):
    """Patch embedding, fixed sin-cos positions, timm blocks, final norm: ``[B, C, H, W] -> [B, K or N, D]``.

    Smaller local views get the sin-cos table spread over the full grid's extent (``sincos_2d``'s ``span``).
    """

    def __init__(
        self,
        cfg: ModelConfig,
        *,
        mlp_hidden_dim: int | None = None,
        norm_eps: float = 1e-6,
        class_token: bool = False,
        stored_positions: bool = False,
    ) -> None:
        """The keywords describe imported encoders; ``stored_positions`` loads the table, fixing the image size."""
        super().__init__()
        dim, depth, heads = vit_dims(cfg)
        self.grid = grid_size(cfg)
        self.embed_dim = dim
        # JEPA encoders output patch tokens: no class token, no classifier
        self.vit = VisionTransformer(
            img_size=cfg.img_size,
            patch_size=cfg.patch_size,
            in_chans=cfg.in_chans,
            num_classes=0,
            global_pool="",  # "avg" would swap the final norm for an fc_norm we never use
            embed_dim=dim,
            depth=depth,
            num_heads=heads,
            # + 0.5: timm's int(dim * ratio) gives back the width exactly (ViT-g: 48 / 11)
            mlp_ratio=4.0 if mlp_hidden_dim is None else (mlp_hidden_dim + 0.5) / dim,
            norm_layer=partial(nn.LayerNorm, eps=norm_eps),
            class_token=False,
            pos_embed="none",
            drop_path_rate=cfg.drop_path_rate,
        )
        self.vit.patch_embed.strict_img_size = False  # local views are smaller; forward checks divisibility
        self.patch_size = cfg.patch_size
        self.num_prefix_tokens = int(class_token)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if class_token else None
        self.stored_positions = stored_positions
        if stored_positions:
            table = torch.zeros(1, self.num_prefix_tokens + self.num_tokens, dim)
        else:
            table = sincos_2d(dim, self.grid)[None]
        self.register_buffer("pos_embed", table, persistent=stored_positions)
        self._other_grids: dict[tuple[int, int], torch.Tensor] = {}
        self._attention = [m for m in self.vit.modules() if hasattr(m, "fused_attn")]
        self._fused_default = [m.fused_attn for m in self._attention]

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    def positions(self, height: int, width: int) -> torch.Tensor:
        """``[1, N, D]`` for a ``height x width`` image."""
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(f"image size {height}x{width} is not a multiple of the patch size {self.patch_size}")
        grid = (height // self.patch_size, width // self.patch_size)
        if grid == self.grid:
            return self.pos_embed
        if self.stored_positions:
            size = self.grid[0] * self.patch_size
            raise ValueError(f"this encoder's position table was stored for {size}x{size} images; "
                             f"got {height}x{width}")
        table = self._other_grids.get(grid)
        if table is None or table.device != self.pos_embed.device:
            table = sincos_2d(self.embed_dim, grid, span=self.grid)[None].to(self.pos_embed.device)
            self._other_grids[grid] = table
        return table

    def select_attention(self, device: torch.device) -> None:
        """timm's explicit attention (``q @ k^T``, softmax, ``@ v``) for bf16 training on a CPU, its fused kernel
        otherwise. PyTorch's CPU flash-attention backward is slow at small sizes: at the quickstart's (64 tokens, head
        widths 32-64) the encoder's bf16 forward + backward is 1.3-1.8x faster explicit, and inference and fp32 are
        not (benchmarks/cpu_attention.py). The same weights, the same function; only the kernel differs."""
        select_attention(self._attention, self._fused_default, device)

    def forward(self, images: torch.Tensor, token_idx: torch.Tensor | None = None) -> torch.Tensor:
        if not torch.jit.is_tracing() and not torch.compiler.is_compiling():
            self.select_attention(images.device)
        x = self.vit.patch_embed(images)  # [B, N, D]
        if self.cls_token is not None:
            if token_idx is not None:
                raise ValueError("an encoder with a class token runs on the full grid only")
            x = torch.cat([self.cls_token.to(x.dtype).expand(x.shape[0], -1, -1), x], dim=1)  # [B, 1 + N, D]
        x = x + self.positions(images.shape[-2], images.shape[-1]).to(x.dtype)  # [B, N, D], before the gather
        if token_idx is not None:
            x = torch.gather(x, 1, token_idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))  # [B, K, D]
        x = self.vit.norm(self.vit.blocks(x))  # [B, K or N, D]: cost scales with K
        return x[:, self.num_prefix_tokens:] if self.num_prefix_tokens else x  # class token attends, not output
