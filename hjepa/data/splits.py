"""The validation split carved from a train split, shared by the k-NN monitor and the dense evaluation."""

from __future__ import annotations

import torch

VALIDATION_FRACTION = 1 / 6  # 10,000 of Fashion-MNIST's 60,000 train images, the size of its test split
VALIDATION_SEED = 1234


def validation_split(total: int, fraction: float = VALIDATION_FRACTION,
                     seed: int = VALIDATION_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """``(bank indices, validation indices)`` of a train split of ``total`` images: a fixed random ``fraction`` held
    out (at least one image, at most all but one), the same for every run, so settings are chosen without the test
    split. The training itself sees the held-out images, unlabelled, as self-supervised methods do."""
    order = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
    count = min(max(1, round(total * fraction)), total - 1)
    return order[count:].sort().values, order[:count].sort().values
