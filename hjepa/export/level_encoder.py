"""``LevelEncoder``: the exportable inference path of one hierarchy level.

Image batch -> target encoder -> 2^k x 2^k average pooling -> level-k target head -> ``(tokens, pooled)``. This is
exactly ``HJEPA.extract_features(images, level)``, as a standalone module that owns copies of only the weights the
level needs (the context encoder, predictor and other heads are not exported).

Options:
- ``img_size`` other than the trained size: the positional embeddings are fixed 2-D sin-cos values, so they are
  recomputed for the new grid (no interpolation of learned weights is involved). The size must be divisible by
  ``patch_size * 2^level`` so every level-k cell is whole.
- ``uint8_input``: the module takes uint8 ``[B, S, S, 3]`` (NHWC, as images are decoded) and normalises inside, so
  a server can feed decoded pixels without a float copy. The image must already be ``S x S`` (no resizing inside).
- ``half``: weights and activations in float16 except the LayerNorms, which run in float32 (their mean / variance
  lose most of their precision in float16); inputs and outputs stay float32 so callers never change.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from hjepa.export.errors import ExportError
from hjepa.models.hierarchy import pool_tokens
from hjepa.models.pos_embed import sincos_2d


class Float32LayerNorm(nn.Module):
    """A LayerNorm that computes in float32 whatever the input dtype, and returns the input dtype."""

    def __init__(self, norm: nn.LayerNorm) -> None:
        super().__init__()
        self.normalized_shape = tuple(norm.normalized_shape)
        self.eps = norm.eps
        # A LayerNorm without affine parameters (the parameter-free level targets) keeps None for both.
        self.weight = None if norm.weight is None else nn.Parameter(norm.weight.detach().float(), requires_grad=False)
        self.bias = None if norm.bias is None else nn.Parameter(norm.bias.detach().float(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.layer_norm(x.float(), self.normalized_shape, self.weight, self.bias, self.eps)
        return out.to(x.dtype)


def half_except_layernorm(module: nn.Module) -> nn.Module:
    """Convert ``module`` to float16 in place, replacing every ``nn.LayerNorm`` by a float32 one; returns it."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.LayerNorm):
            setattr(module, name, Float32LayerNorm(child))
        else:
            half_except_layernorm(child)
    for name, param in module.named_parameters(recurse=False):
        setattr(module, name, nn.Parameter(param.detach().half(), requires_grad=False))
    for name, buffer in module.named_buffers(recurse=False):
        if buffer.is_floating_point():
            setattr(module, name, buffer.half())
    return module


def check_img_size(img_size: int, patch_size: int, level: int) -> None:
    """Raise ``ExportError`` unless ``img_size`` gives whole level-k cells."""
    factor = patch_size * 2**level
    if img_size <= 0 or img_size % factor:
        raise ExportError(
            f"image size {img_size} is not usable for level {level}: it must be a positive multiple of "
            f"patch_size * 2^{level} = {factor} (e.g. {max(factor, img_size // factor * factor)})"
        )


class LevelEncoder(nn.Module):
    """``forward(images) -> (tokens [B, N_k, D], pooled [B, D])``, both float32.

    ``images``: float32 ``[B, 3, S, S]`` already normalised, or with ``uint8_input`` uint8 ``[B, S, S, 3]``.
    ``N_k = (S / patch / 2^k)^2``; ``D`` is the head width. ``pooled`` is the mean of the tokens.
    """

    def __init__(
        self,
        encoder: nn.Module,
        head: nn.Module,
        level: int,
        grid: tuple[int, int],
        mean: Sequence[float],
        std: Sequence[float],
        uint8_input: bool = False,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.level = level
        self.grid = grid
        self.uint8_input = uint8_input
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    @property
    def compute_dtype(self) -> torch.dtype:
        return self.encoder.vit.patch_embed.proj.weight.dtype

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.uint8_input:
            # Same arithmetic as EvalTransform (x / 255 - mean) / std, so both input formats agree to float rounding.
            images = (images.permute(0, 3, 1, 2).float() / 255.0 - self.mean) / self.std
        tokens = self.encoder(images.to(self.compute_dtype))
        tokens = self.head(pool_tokens(tokens, self.grid, self.level)).float()
        return tokens, tokens.mean(1)


def resize_encoder(encoder: nn.Module, img_size: int) -> None:
    """Point a ``ViTEncoder`` at a new square image size: patch embedding size check and sin-cos positions."""
    patch = encoder.vit.patch_embed.patch_size[0]
    encoder.vit.patch_embed.set_input_size(img_size=img_size)
    encoder.grid = (img_size // patch, img_size // patch)
    encoder.pos_embed = sincos_2d(encoder.embed_dim, encoder.grid)[None].to(encoder.pos_embed.device)


def build_level_encoder(
    model: nn.Module,
    level: int,
    mean: Sequence[float],
    std: Sequence[float],
    img_size: int | None = None,
    uint8_input: bool = False,
    half: bool = False,
) -> LevelEncoder:
    """A ``LevelEncoder`` for ``level`` of an ``HJEPA`` model, on copies of its target encoder and level head.

    ``img_size`` defaults to the trained size; ``model`` itself is never modified.
    """
    if not 0 <= level < model.num_levels:
        raise ExportError(f"level {level} does not exist; this checkpoint has levels 0..{model.num_levels - 1}")
    trained_size = model.config.model.img_size
    patch_size = model.config.model.patch_size
    img_size = trained_size if img_size is None else img_size
    check_img_size(img_size, patch_size, level)
    encoder = copy.deepcopy(model.target_encoder).float().eval()
    head = copy.deepcopy(model.target_heads[level]).float().eval()
    if img_size != trained_size:
        resize_encoder(encoder, img_size)
    if half:
        half_except_layernorm(encoder)
        half_except_layernorm(head)
    module = LevelEncoder(encoder, head, level, encoder.grid, mean, std, uint8_input)
    module.requires_grad_(False)
    return module.eval()
