"""Image folders, ``DATA_DIR/{train,val}/CLASS/*.jpg|png|...``, decoded lazily (ImageNet-100 uses the same layout).

Split ``test`` reads ``val/``. Class names are the sorted sub-folders of ``train/`` (of the split's own folder when
there is no ``train/``), so a label means the same class in both splits. Each image is converted to RGB, resized so
its shorter side is ``storage_size`` and center-cropped to ``storage_size x storage_size``: every item has the same
shape and batches stack, and the random resized crop of pre-training then runs batched on the training device.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hjepa.data.base import (
    DATA_DIR_HINT,
    DATASET_STATS,
    DATASETS,
    DataError,
    ImageDataset,
    dataset_stats,
    normalise_split,
)
from hjepa.data.pixels import to_rgb_image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
DEFAULT_STORAGE_SIZE = 256
SPLIT_FOLDERS = {"train": "train", "test": "val"}
LAYOUT_HINT = "expected DATA_DIR/{train,val}/CLASS/IMAGE with .jpg, .png, ... images"


def _class_folders(directory: Path) -> list[str]:
    return sorted(entry.name for entry in directory.iterdir() if entry.is_dir() and not entry.name.startswith("."))


def _images_under(directory: Path) -> list[Path]:
    """Image files under ``directory`` by extension (any case: ``.JPEG``). Hidden files and folders are skipped, as
    hidden class folders are: macOS leaves an AppleDouble ``._NAME.jpg`` (metadata, not an image) beside each image."""
    return sorted(
        path
        for path in directory.rglob("*")
        if path.suffix.lower() in IMAGE_EXTENSIONS
        and not any(part.startswith(".") for part in path.relative_to(directory).parts)
        and path.is_file()
    )


def decode_image(path: Path, size: int) -> torch.Tensor:
    """Decode ``path`` to uint8 ``[3, size, size]``: RGB, shorter side resized to ``size``, then center-cropped."""
    try:
        with Image.open(path) as image:
            # JPEG decodes at 1/2, 1/4, 1/8 for free; draft keeps both sides >= size.
            image.draft("RGB", (size, size))
            image = to_rgb_image(image)  # 16-bit and float pictures scaled, not clipped to white / black
            width, height = image.size
            scale = size / min(width, height)
            new_width, new_height = max(size, round(width * scale)), max(size, round(height * scale))
            if (new_width, new_height) != (width, height):
                image = image.resize((new_width, new_height), Image.Resampling.BICUBIC)
            left, top = (new_width - size) // 2, (new_height - size) // 2
            image = image.crop((left, top, left + size, top + size))
            pixels = np.asarray(image, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        # PIL's errors for bad files: name the file so it can be removed.
        raise DataError(f"cannot decode image {path}: {error}") from error
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1).contiguous()


class ImageFolderDataset(ImageDataset):
    """A lazily decoded image-folder split; ``dataset[i] -> (uint8 [3, S, S], label)`` with ``S = storage_size``."""

    in_memory = False

    def __init__(
        self, root: str | Path, split: str, storage_size: int | None = None, name: str = "imagefolder"
    ) -> None:
        split = normalise_split(split)
        size = DEFAULT_STORAGE_SIZE if storage_size is None else int(storage_size)
        if size <= 0:
            raise DataError(f"{name}: storage_size must be positive, got {size}")
        root = Path(root).expanduser()
        if not root.is_dir():
            raise DataError(f"{name}: {root} is not a directory; {LAYOUT_HINT}")
        split_dir = root / SPLIT_FOLDERS[split]
        if not split_dir.is_dir():
            raise DataError(f"{name}: {root} has no {SPLIT_FOLDERS[split]}/ folder for split {split!r}; {LAYOUT_HINT}")
        class_source = root / "train" if (root / "train").is_dir() else split_dir
        classes = _class_folders(class_source)
        if not classes:
            raise DataError(f"{name}: {class_source} has no class folders; {LAYOUT_HINT}")
        class_index = {class_name: index for index, class_name in enumerate(classes)}
        samples: list[tuple[Path, int]] = []
        for class_name in _class_folders(split_dir):
            if class_name not in class_index:
                raise DataError(f"{name}: {split_dir / class_name} is a class missing from {class_source}")
            samples.extend((path, class_index[class_name]) for path in _images_under(split_dir / class_name))
        if not samples:
            raise DataError(f"{name}: {split_dir} holds no images; {LAYOUT_HINT}")
        self.name = name
        self.split = split
        self.root = root
        self.storage_size = size
        self.classes = classes
        self.samples = samples
        self.mean, self.std = dataset_stats(name if name in DATASET_STATS else "imagefolder")
        self.image_shape = (3, size, size)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        return decode_image(path, self.storage_size), label

    @property
    def labels(self) -> torch.Tensor:
        """long ``[N]``: every label, known without decoding an image."""
        return torch.tensor([label for _, label in self.samples], dtype=torch.long)

    def fingerprint(self) -> str:
        """SHA-256 of every sample's path, label, size and modification time (a stat per file, no decoding), plus the
        class names and storage size: a moved, replaced or relabelled image changes it."""
        digest = hashlib.sha256(json.dumps([self.classes, self.storage_size]).encode())
        for path, label in self.samples:
            try:
                stat = path.stat()
            except OSError as error:
                raise DataError(f"{self.name}: cannot read {path}: {error}") from None
            digest.update(f"{path}\0{label}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return digest.hexdigest()

    def subset(self, indices: Sequence[int] | torch.Tensor) -> ImageFolderDataset:
        picked = copy.copy(self)
        index_list = indices.tolist() if isinstance(indices, torch.Tensor) else list(indices)
        picked.samples = [self.samples[i] for i in index_list]
        return picked


@DATASETS.register("imagefolder")
def build_imagefolder(
    split: str, data_dir: str | None = None, download: bool = False, storage_size: int | None = None
) -> ImageFolderDataset:
    if data_dir is None:
        raise DataError(f"imagefolder: no data directory given ({DATA_DIR_HINT}); {LAYOUT_HINT}")
    del download  # nothing to download: the user brings the folder
    return ImageFolderDataset(data_dir, split, storage_size, name="imagefolder")


@DATASETS.register("imagenet100")
def build_imagenet100(
    split: str, data_dir: str | None = None, download: bool = False, storage_size: int | None = None
) -> ImageFolderDataset:
    if data_dir is None:
        raise DataError(
            f"imagenet100: no data directory given ({DATA_DIR_HINT}, at the ImageNet-100 root); {LAYOUT_HINT}"
        )
    del download  # ImageNet cannot be downloaded without an account
    return ImageFolderDataset(data_dir, split, storage_size, name="imagenet100")
