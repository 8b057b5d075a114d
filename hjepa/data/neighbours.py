"""Neighbour views: the second global view of an image is cut from its nearest raw-pixel neighbour.

Predicting a neighbour teaches what such images share, with no label read (NNCLR's idea, in input space; the
embedding-space variant did worse, docs/learning.md). A pure function of (seed, step), so resume stays exact.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hjepa.config import ConfigError


def pixel_vectors(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[N, C, H, W]`` -> float32 ``[N, C*H*W]``: each image minus its own mean, L2-normalised."""
    flat = images.reshape(len(images), -1).float()
    return F.normalize(flat - flat.mean(1, keepdim=True), dim=1)


class PixelNeighbours:
    """Replace a share of a batch by each image's nearest raw-pixel neighbour from a random pool; see the module."""

    def __init__(self, images: torch.Tensor, share: float, pool: int, chunk: int = 8192) -> None:
        if not 0 < share <= 1:
            raise ConfigError(f"data.neighbour_views must be in (0, 1], got {share}")
        if pool < 2:
            raise ConfigError(f"data.neighbour_pool must be at least 2, got {pool}")
        self.images = images
        self.share = float(share)
        self.pool = min(int(pool), len(images))
        self.table = torch.cat([pixel_vectors(images[i:i + chunk]) for i in range(0, len(images), chunk)])

    def neighbours(self, indices: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """long ``[B]``: for each dataset index, its nearest neighbour's index in a random pool (never itself)."""
        pool = torch.randint(0, len(self.table), (self.pool,), generator=generator, device=generator.device)
        pool = pool.to(self.table.device)
        indices = indices.to(self.table.device)
        scores = self.table[indices] @ self.table[pool].T
        scores[pool[None, :] == indices[:, None]] = float("-inf")
        return pool[scores.argmax(1)]

    def __call__(self, images: torch.Tensor, indices: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``images`` (the batch, uint8 ``[B, C, H, W]`` of dataset ``indices``) with a ``share`` of its rows
        replaced by their neighbours; on ``images.device``."""
        found = self.neighbours(indices, generator)
        swap = torch.rand(len(indices), generator=generator, device=generator.device) < self.share
        out = images.clone()
        swap = swap.to(out.device)
        out[swap] = self.images[found.to(self.images.device)[swap.to(self.images.device)]].to(out.device)
        return out
