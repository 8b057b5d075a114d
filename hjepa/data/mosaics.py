"""Mosaics of labelled images with per-pixel labels: the offline dense task (``hjepa-eval dense``).

A mosaic is an ``n x n`` grid of tiles on a ``canvas x canvas`` canvas; each tile holds one image of the source split
(resized to the tile) or stays empty. Pixel labels: 0 for background (an empty tile, or a source pixel darker than
``threshold``), else ``1 + class`` of the image under the pixel. Everything is a function of ``seed``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

BACKGROUND = 0
IGNORE = 255  # label value left out of losses and scores (VOC's "void")


@dataclass
class Mosaics:
    """``images`` uint8 ``[M, C, S, S]``, ``pixel_labels`` long ``[M, S, S]`` (0 background, 1 + class, or
    ``IGNORE``), ``tile_labels`` long ``[M, n, n]`` (-1: empty tile) and ``layout`` = n; ``num_classes`` counts
    the background (source classes + 1)."""

    images: torch.Tensor
    pixel_labels: torch.Tensor
    tile_labels: torch.Tensor | None
    layout: int
    num_classes: int

    def __len__(self) -> int:
        return self.images.shape[0]


def make_mosaics(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    count: int,
    layout: int,
    canvas: int,
    seed: int,
    empty_fraction: float = 0.25,
    threshold: int = 32,
) -> Mosaics:
    """``count`` mosaics of ``layout x layout`` tiles drawn from ``images`` uint8 ``[N, C, H, W]`` / ``labels [N]``.

    ``canvas`` must be a multiple of ``layout``. Each tile is empty with probability ``empty_fraction``; a tile's
    image is drawn uniformly with replacement and resized (bilinear, antialiased) to ``canvas // layout`` px.
    """
    if canvas % layout:
        raise ValueError(f"the canvas ({canvas} px) must be a multiple of the layout ({layout})")
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"expected uint8 images [N, C, H, W], got {images.dtype} {tuple(images.shape)}")
    generator = torch.Generator().manual_seed(seed)
    tiles = layout * layout
    picks = torch.randint(0, images.shape[0], (count, tiles), generator=generator)
    empty = torch.rand(count, tiles, generator=generator) < empty_fraction
    tile = canvas // layout
    resized = resize_uint8(images, (tile, tile))  # [N, C, t, t], resized once for every mosaic
    chosen = resized[picks.flatten()].view(count, tiles, *resized.shape[1:])
    chosen = chosen.masked_fill(empty.view(count, tiles, 1, 1, 1), 0)
    tile_labels = labels[picks].masked_fill(empty, -1)
    # Pixel labels per tile: 1 + class where the garment is bright enough, else background.
    bright = chosen.amax(dim=2) >= threshold  # [M, T, t, t]
    pixel = torch.where(bright, (tile_labels + 1).view(count, tiles, 1, 1), BACKGROUND)
    return Mosaics(
        images=tile_grid(chosen, layout),
        pixel_labels=tile_grid(pixel.unsqueeze(2), layout).squeeze(1).long(),
        tile_labels=tile_labels.view(count, layout, layout).long(),
        layout=layout,
        num_classes=num_classes + 1,
    )


def resize_uint8(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 ``[N, C, H, W]`` -> ``[N, C, *size]``, bilinear and antialiased."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    pixels = F.interpolate(images.float(), size=size, mode="bilinear", align_corners=False, antialias=True)
    return pixels.round().clamp(0, 255).to(torch.uint8)


def tile_grid(parts: torch.Tensor, layout: int) -> torch.Tensor:
    """``[M, n*n, C, th, tw]`` -> ``[M, C, n*th, n*tw]``, tiles in row-major order."""
    count, _, channels, tile_h, tile_w = parts.shape
    grid = parts.view(count, layout, layout, channels, tile_h, tile_w)
    return grid.permute(0, 3, 1, 4, 2, 5).reshape(count, channels, layout * tile_h, layout * tile_w)
