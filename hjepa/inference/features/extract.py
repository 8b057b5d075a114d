"""Pooled level-k features of a whole dataset split, extracted in batches with a progress bar."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from tqdm.auto import tqdm

# images (float, normalised [B, 3, S, S]) -> pooled features [B, D]
EmbedFn = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def extract_levels(
    embed: Callable[[torch.Tensor], dict[int, torch.Tensor]],
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    transform: Callable[[torch.Tensor], torch.Tensor],
    total: int | None = None,
    progress: bool = True,
    desc: str = "features",
) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """uint8 ``(images [b, C, H, W], labels [b])`` batches -> ``{level: pooled [N, D]}``, labels ``[N]`` on the CPU.

    ``embed`` returns every level, so one encoder pass serves them all.
    """
    features: dict[int, list[torch.Tensor]] = {}
    labels = []
    for images, batch_labels in tqdm(batches, total=total, desc=desc, disable=not progress, leave=False):
        for level, pooled in embed(transform(images)).items():
            features.setdefault(level, []).append(pooled.float().cpu())
        labels.append(batch_labels.long().cpu())
    all_labels = torch.cat(labels) if labels else torch.empty(0, dtype=torch.long)
    return {level: torch.cat(chunks) for level, chunks in features.items()}, all_labels


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
    """uint8 ``[N, C, H, W]`` -> features float32 ``[N, D]`` on the CPU, labels ``[N]``."""
    batches = ((images[start : start + batch_size].to(device), labels[start : start + batch_size])
               for start in range(0, len(images), batch_size))
    features, _ = extract_levels(lambda batch: {0: embed(batch)}, batches, transform,
                                 math.ceil(len(images) / batch_size), progress, desc)
    return features.get(0, torch.empty(0)), labels.clone()


def dataset_arrays(dataset: object, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``limit`` images as one uint8 tensor, and labels."""
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
    """``count`` images spread evenly, picked before decoding so a folder decodes only those."""
    if count is not None and count < len(dataset):
        dataset = dataset.subset(spread_subset(count, len(dataset)))
    return dataset_arrays(dataset)


def spread_subset(count: int, total: int) -> torch.Tensor:
    """Evenly spread: every class of a sorted dataset stays."""
    if count >= total:
        return torch.arange(total)
    return torch.linspace(0, total - 1, count).round().long()
