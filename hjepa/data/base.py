"""The dataset interface: uint8 images plus integer labels, normalisation stats attached.

Datasets never augment; the batched, seeded transforms on the training device do. In-memory datasets are one
``[N, C, H, W]`` tensor (a batch is one gather); image folders decode lazily through a DataLoader.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from hjepa.errors import HJEPAError
from hjepa.registry import Registry

DATASETS = Registry("dataset")

Stats = tuple[float, float, float]

IMAGENET_MEAN: Stats = (0.485, 0.456, 0.406)
IMAGENET_STD: Stats = (0.229, 0.224, 0.225)

# Per-channel stats of pixels in [0, 1] (grayscale repeated to 3 channels, as the transforms do).
# Tabled, not computed, so an export records them from the name alone.
DATASET_STATS: dict[str, tuple[Stats, Stats]] = {
    "fashion-mnist": ((0.286, 0.286, 0.286), (0.353, 0.353, 0.353)),
    "digits": ((0.305, 0.305, 0.305), (0.376, 0.376, 0.376)),  # measured over all 1797 images
    "cifar100": ((0.507, 0.487, 0.441), (0.267, 0.256, 0.276)),
    "imagefolder": (IMAGENET_MEAN, IMAGENET_STD),
    "imagenet100": (IMAGENET_MEAN, IMAGENET_STD),
}

SPLITS = ("train", "test")


# How each command takes a data folder or a download, for messages.
DATA_DIR_HINT = "--data-dir DIR; hjepa-train: --set data.data_dir=DIR"
DOWNLOAD_HINT = "hjepa-eval --download; hjepa-train: --set data.download=true"


class DataError(HJEPAError, ValueError):
    """A dataset that cannot be read as asked: a missing or malformed path, an unknown name, a too-small split.

    Messages are one line, name the path and say which layout was expected.
    """


def torchvision_download(name: str, dataset_class: str, folder: str | Path, split: str, instead: str) -> None:
    """Download ``split`` of dataset ``name`` with torchvision's ``dataset_class`` (``"CIFAR100"``) into ``folder``.

    Only called when a user asked for a download. A failure (offline: URLError; a truncated or corrupt archive) is
    a DataError naming the folder and what to do ``instead``, not torchvision's traceback.
    """
    import torchvision  # imported only here: reading local files needs nothing from it

    try:
        getattr(torchvision.datasets, dataset_class)(str(folder), train=split == "train", download=True)
    except (OSError, RuntimeError) as error:
        raise DataError(f"{name}: download into {Path(folder).expanduser()} failed ({error}); {instead} "
                        f"and pass that folder ({DATA_DIR_HINT})") from None


def dataset_stats(name: str) -> tuple[Stats, Stats]:
    """``(mean, std)`` per RGB channel, in [0, 1] pixel units, for a registered dataset name."""
    if name not in DATASET_STATS:
        raise DataError(f"no normalisation stats for dataset {name!r}; known: {', '.join(sorted(DATASET_STATS))}")
    return DATASET_STATS[name]


def normalise_split(split: str) -> str:
    """``train`` or ``test``; ``val`` is accepted as another name for the held-out split."""
    if split == "val":
        return "test"
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected 'train' or 'test' ('val' is accepted for 'test')")
    return split


class ImageDataset(Dataset):
    """Base class: ``dataset[i] -> (uint8 tensor [C, H, W], int label)``.

    Attributes: ``name``, ``split`` ("train" | "test"), ``classes`` (index -> class name), ``num_classes``,
    ``mean`` / ``std`` (3-channel stats for normalising in [0, 1] units), ``in_memory``, and ``image_shape``
    ``(C, H, W)`` of the stored images (``C`` is 1 for grayscale sources; transforms expand it to 3).
    """

    name: str
    split: str
    classes: list[str]
    mean: Stats
    std: Stats
    in_memory: bool = False
    image_shape: tuple[int, int, int]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        raise NotImplementedError

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images uint8 [N, C, H, W], labels long [N])``; only in-memory datasets have them."""
        raise DataError(f"{self.name} ({self.split}) decodes images lazily and has no in-memory tensors")

    def subset(self, indices: Sequence[int] | torch.Tensor) -> ImageDataset:
        """A dataset of the same kind holding only ``indices`` (in that order)."""
        raise NotImplementedError

    def fingerprint(self) -> str:
        """A digest of what this split holds (pixels and labels, in order), for caches of derived features: data
        changed in place (same path, same count) must not be answered from a stale cache."""
        raise NotImplementedError

    def limit(self, count: int | None) -> ImageDataset:
        """The first ``count`` images (all of them when ``count`` is None or not smaller than the dataset)."""
        if count is None or count >= len(self):
            return self
        if count <= 0:
            raise DataError(f"{self.name}: limit must be positive, got {count}")
        return self.subset(range(count))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, size={len(self)}, "
            f"num_classes={self.num_classes}, image_shape={self.image_shape}, in_memory={self.in_memory})"
        )


class TensorImageDataset(ImageDataset):
    """An in-memory split: ``images`` uint8 ``[N, C, H, W]`` and ``labels`` long ``[N]``, both on the CPU."""

    in_memory = True

    def __init__(
        self,
        name: str,
        split: str,
        images: torch.Tensor,
        labels: torch.Tensor,
        classes: list[str],
        mean: Stats | None = None,
        std: Stats | None = None,
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise DataError(f"{name}: images must be uint8 [N, C, H, W], got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise DataError(f"{name}: {images.shape[0]} images but labels of shape {tuple(labels.shape)}")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= len(classes)):
            raise DataError(
                f"{name}: labels span {int(labels.min())}..{int(labels.max())} but there are {len(classes)} classes"
            )
        default_mean, default_std = DATASET_STATS.get(name, (IMAGENET_MEAN, IMAGENET_STD))
        self.name = name
        self.split = split
        self.images = images.contiguous()
        self.labels = labels.long().contiguous()
        self.classes = list(classes)
        self.mean = mean or default_mean
        self.std = std or default_std
        channels, height, width = images.shape[1:]
        self.image_shape = (int(channels), int(height), int(width))

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images, self.labels

    def fingerprint(self) -> str:
        """SHA-256 of the uint8 pixels, the labels and the shape (a fraction of a second for CIFAR-100)."""
        digest = hashlib.sha256(str(tuple(self.images.shape)).encode())
        digest.update(memoryview(self.images.numpy()).cast("B"))
        digest.update(memoryview(self.labels.numpy()).cast("B"))
        return digest.hexdigest()

    def subset(self, indices: Sequence[int] | torch.Tensor) -> TensorImageDataset:
        index = torch.as_tensor(list(indices) if not isinstance(indices, torch.Tensor) else indices, dtype=torch.long)
        return TensorImageDataset(
            self.name, self.split, self.images[index], self.labels[index], self.classes, self.mean, self.std
        )
