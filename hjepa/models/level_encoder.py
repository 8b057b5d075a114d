"""``LevelEncoder``: the one inference path from images to level-k features.

Image batch -> target encoder -> 2^k x 2^k average pooling -> level-k target head -> ``(tokens, pooled)``.
``level_features`` is that maths, for any set of levels from ONE encoder pass; ``HJEPA.extract_features``,
``LevelEncoder`` (export, serving, evaluation) and the encoder artifact all call it, so there is no second copy.
A standalone ``LevelEncoder`` owns only the weights inference needs (the context encoder, predictor and training
heads are not part of it); ``build_level_encoder`` makes one on copies of a model's weights, for export.

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

from hjepa.models.hierarchy import apply_head, level_grid
from hjepa.models.pos_embed import sincos_2d
from hjepa.models.pos_regrid import regrid_positions


class Float32LayerNorm(nn.Module):
    """A LayerNorm that computes in float32 whatever the input dtype, and returns the input dtype."""

    def __init__(self, norm: nn.LayerNorm) -> None:
        super().__init__()
        self.normalized_shape = tuple(norm.normalized_shape)
        self.eps = norm.eps
        # A LayerNorm without affine parameters (the parameter-free level targets) keeps None for both. Copies: a
        # view would keep alive the whole mapped weights file it points into (the fp32 model a half export drops).
        self.weight = None if norm.weight is None else nn.Parameter(norm.weight.detach().float().clone(), False)
        self.bias = None if norm.bias is None else nn.Parameter(norm.bias.detach().float().clone(), False)

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


def level_features(
    encoder: nn.Module,
    heads: dict[int, nn.Module] | Sequence[nn.Module],
    grid: tuple[int, int],
    images: torch.Tensor,
    levels: Sequence[int],
    with_tokens: bool = True,
) -> dict[int, tuple[torch.Tensor | None, torch.Tensor]]:
    """One encoder pass -> per level ``k`` in ``levels``: ``(tokens [B, N_k, D] or None, pooled [B, D])``.

    ``heads[k]`` is the level-k target head; ``grid`` the encoder's patch grid for ``images``. ``with_tokens=False``
    keeps only the pooled vectors (the token maps of a large batch are most of the memory traffic).
    """
    tokens = encoder(images)  # [B, N, D]: the expensive part, shared by every level
    out: dict[int, tuple[torch.Tensor | None, torch.Tensor]] = {}
    for level in levels:
        level_tokens = apply_head(heads[level], tokens, grid, level)
        out[level] = (level_tokens if with_tokens else None, level_tokens.mean(1))
    return out


class LevelFeatures:
    """Feature extraction for models with ``target_encoder``, ``target_heads``, ``grid`` and ``num_levels``
    (``HJEPA``, ``MultiViewJEPA``, ``PretrainedEncoder``): one definition of the level path for all of them."""

    target_encoder: nn.Module
    target_heads: Sequence[nn.Module]
    grid: tuple[int, int]
    num_levels: int

    @torch.no_grad()
    def extract_features(self, images: torch.Tensor, level: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Target-encoder features: level tokens ``[B, N_k, D_h]`` and their mean ``[B, D_h]``."""
        tokens, pooled = self.extract_levels(images, [level])[level]
        return tokens, pooled

    @torch.no_grad()
    def extract_levels(
        self, images: torch.Tensor, levels: Sequence[int], with_tokens: bool = True
    ) -> dict[int, tuple[torch.Tensor | None, torch.Tensor]]:
        """Every level in ``levels`` from one target-encoder pass: ``{k: (tokens [B, N_k, D_h] | None, [B, D_h])}``
        (see :func:`level_features`)."""
        for level in levels:
            if not 0 <= level < self.num_levels:
                raise ValueError(f"level {level} does not exist; this model has levels 0..{self.num_levels - 1}")
        # In train mode the encoder's stochastic depth would make the features random.
        self.target_encoder.eval()
        return level_features(self.target_encoder, self.target_heads, self.grid, images, levels, with_tokens)

    def level_grid(self, level: int) -> tuple[int, int]:
        return level_grid(self.grid, level)


class LevelEncoder(nn.Module):
    """``forward(images) -> (tokens [B, N_k, D], pooled [B, D])`` at ``level``, both float32.

    ``images``: float32 ``[B, 3, S, S]`` already normalised, or with ``uint8_input`` uint8 ``[B, S, S, 3]``.
    ``N_k = (S / patch / 2^k)^2``; ``D`` is the head width. ``pooled`` is the mean of the tokens. ``head`` is the
    level-``level`` head; ``heads`` (optional) maps more levels to their heads, for :meth:`features`.
    """

    def __init__(
        self,
        encoder: nn.Module,
        head: nn.Module | None,
        level: int,
        grid: tuple[int, int],
        mean: Sequence[float],
        std: Sequence[float],
        uint8_input: bool = False,
        heads: dict[int, nn.Module] | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        heads = dict(heads or {})
        if head is not None:
            heads[level] = head
        self.head = heads[level]
        # Every head, by level, for features(); the exported graph only ever reaches self.head.
        self.level_heads = nn.ModuleDict({str(k): heads[k] for k in sorted(heads) if k != level})
        self.level = level
        self.grid = grid
        self.uint8_input = uint8_input
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    @property
    def levels(self) -> list[int]:
        """The levels this module has heads for."""
        return sorted([self.level, *(int(k) for k in self.level_heads)])

    def heads(self) -> dict[int, nn.Module]:
        return {self.level: self.head, **{int(k): head for k, head in self.level_heads.items()}}

    @property
    def compute_dtype(self) -> torch.dtype:
        return self.encoder.vit.patch_embed.proj.weight.dtype

    def _inputs(self, images: torch.Tensor) -> torch.Tensor:
        if self.uint8_input:
            # EvalTransform's arithmetic: both input formats agree to rounding.
            images = (images.permute(0, 3, 1, 2).float() / 255.0 - self.mean) / self.std
        return images.to(self.compute_dtype)

    def features(
        self, images: torch.Tensor, levels: Sequence[int], with_tokens: bool = True
    ) -> dict[int, tuple[torch.Tensor | None, torch.Tensor]]:
        """Several levels from one encoder pass (see :func:`level_features`), float32."""
        out = level_features(self.encoder, self.heads(), self.grid, self._inputs(images), levels, with_tokens)
        return {k: (None if t is None else t.float(), p.float()) for k, (t, p) in out.items()}

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, _ = level_features(self.encoder, {self.level: self.head}, self.grid, self._inputs(images),
                                   [self.level])[self.level]
        tokens = tokens.float()
        return tokens, tokens.mean(1)


def resize_encoder(encoder: nn.Module, img_size: int) -> None:
    """Point a ``ViTEncoder`` at a new square image size: patch embedding size check and positions (a stored
    table is recomputed when it is sin-cos, else resampled bicubically: ``pos_regrid``)."""
    patch = encoder.vit.patch_embed.patch_size[0]
    old_grid, new_grid = encoder.grid, (img_size // patch, img_size // patch)
    encoder.vit.patch_embed.set_input_size(img_size=img_size)
    encoder.grid = new_grid
    if getattr(encoder, "stored_positions", False):  # an imported table: recomputed or resampled (pos_regrid)
        encoder.pos_embed, encoder.pos_regrid = regrid_positions(encoder.pos_embed, old_grid, new_grid)
        return
    encoder.pos_embed = sincos_2d(encoder.embed_dim, encoder.grid)[None].to(encoder.pos_embed.device)


def _copy(module: nn.Module, share: bool) -> nn.Module:
    """A copy of ``module``'s structure; with ``share`` its float32 tensors are the original's, not copies."""
    memo = {id(t): t for t in module.state_dict(keep_vars=True).values() if t.dtype == torch.float32} if share else {}
    return copy.deepcopy(module, memo)


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

    ``img_size`` defaults to the trained size; ``model`` itself is never modified. ``level`` and ``img_size`` are
    checked at the edge (``hjepa.export``); here a bad one is a bug.
    """
    if not 0 <= level < model.num_levels:
        raise ValueError(f"level {level} does not exist; this model has levels 0..{model.num_levels - 1}")
    trained_size = model.target_encoder.grid[0] * model.target_encoder.vit.patch_embed.patch_size[0]
    img_size = trained_size if img_size is None else img_size
    # Copies share the fp32 weights (a ViT-H is 2.5 GB): resizing and half_except_layernorm replace tensors,
    # never write into them, so the fp16 copy costs only its own fp16 bytes.
    encoder = _copy(model.target_encoder, share=True).float().eval()
    head = _copy(model.target_heads[level], share=True).float().eval()
    if img_size != trained_size:
        resize_encoder(encoder, img_size)
    if half:
        half_except_layernorm(encoder)
        half_except_layernorm(head)
    module = LevelEncoder(encoder, head, level, encoder.grid, mean, std, uint8_input)
    module.requires_grad_(False)
    return module.eval()
