"""Pooled level-k features of a whole dataset split, extracted in batches with a progress bar."""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

# images (float, normalised [B, 3, S, S]) -> pooled features [B, D]
EmbedFn = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def extract_features(
    embed: EmbedFn,
    images: torch.Tensor,
    labels: torch.Tensor,
    transform: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    progress: bool = True,
    desc: str = "features",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``images`` uint8 ``[N, C, H, W]`` -> (features float32 ``[N, D]`` on the CPU, labels ``[N]``)."""
    chunks = []
    starts = range(0, len(images), batch_size)
    for start in tqdm(starts, desc=desc, disable=not progress, leave=False):
        batch = transform(images[start : start + batch_size].to(device))
        chunks.append(embed(batch).float().cpu())
    features = torch.cat(chunks) if chunks else torch.empty(0)
    return features, labels.clone()


def dataset_arrays(dataset: object, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """All (or the first ``limit``) images of a dataset as one uint8 tensor, plus labels."""
    if getattr(dataset, "in_memory", False):
        images, labels = dataset.tensors()
    else:
        count = len(dataset) if limit is None else min(limit, len(dataset))
        items = [dataset[i] for i in range(count)]
        images = torch.stack([img for img, _ in items])
        labels = torch.tensor([label for _, label in items], dtype=torch.long)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return images, labels


def spread_arrays(dataset: object, count: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` images spread evenly over ``dataset`` (all of them when None), as ``dataset_arrays`` gives them.
    Picks first and decodes after, so a folder dataset decodes only the images it returns."""
    if count is not None and count < len(dataset):
        dataset = dataset.subset(spread_subset(count, len(dataset)))
    return dataset_arrays(dataset)


def spread_subset(count: int, total: int) -> torch.Tensor:
    """``count`` indices spread evenly over ``total`` (deterministic, covers every class of a sorted dataset)."""
    if count >= total:
        return torch.arange(total)
    return torch.linspace(0, total - 1, count).round().long()
