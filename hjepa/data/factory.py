"""``build_dataset``: a dataset by registered name, with errors that list the valid names and name the path."""

from __future__ import annotations

# Importing the dataset modules registers them.
from hjepa.data import cifar, digits, fashion_mnist, imagefolder  # noqa: F401
from hjepa.data.base import DATASETS, DataError, ImageDataset, normalise_split


def build_dataset(
    name: str,
    split: str,
    data_dir: str | None = None,
    download: bool = False,
    storage_size: int | None = None,
    limit: int | None = None,
) -> ImageDataset:
    """The ``split`` ("train" | "test") of dataset ``name`` (``fashion-mnist``, ``digits``, ``cifar100``,
    ``imagefolder``, ``imagenet100``).

    ``data_dir`` overrides the dataset's default location; ``download`` is honoured only by datasets that can fetch
    themselves (cifar100, fashion-mnist through torchvision); ``storage_size`` is the side of the square uint8 images
    that image folders decode to (default 256; in-memory datasets keep their native size); ``limit`` keeps only the
    first N images (debugging and tests).
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS.names())}")
    dataset = DATASETS.build(
        name, normalise_split(split), data_dir=data_dir, download=download, storage_size=storage_size
    )
    return dataset.limit(limit)
