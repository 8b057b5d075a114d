"""A VOC-layout segmentation folder: ``JPEGImages/``, ``SegmentationClass/`` (label PNGs) and split lists.

``ROOT/ImageSets/Segmentation/{train,val}.txt`` name the images (one stem a line); ``SegmentationClass/STEM.png``
holds class indices (palette or grayscale PNG; 255 is "void", left out of scores). Images are resized so the shorter
side is ``size`` and centre-cropped; labels follow with nearest-neighbour resampling.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hjepa.data.base import DataError
from hjepa.data.mosaics import IGNORE

SPLIT_FILES = {"train": "train.txt", "test": "val.txt", "val": "val.txt"}
MAX_IMAGES = 20_000  # decoded in memory at the model's size: a guard against a list of millions


def load_voc_split(root: str | Path, split: str, size: int, limit: int | None = None) -> tuple[torch.Tensor, ...]:
    """``(images uint8 [N, 3, size, size], labels long [N, size, size])`` of ``split`` (train | test = val)."""
    root = Path(root).expanduser()
    listing = root / "ImageSets" / "Segmentation" / SPLIT_FILES[split]
    if not listing.is_file():
        raise DataError(f"{root} is not a VOC-layout folder: {listing} is missing "
                        "(expected JPEGImages/, SegmentationClass/ and ImageSets/Segmentation/{train,val}.txt)")
    stems = [line.strip() for line in listing.read_text(encoding="utf-8").splitlines() if line.strip()]
    if limit is not None:
        stems = stems[:limit]
    if not stems or len(stems) > MAX_IMAGES:
        raise DataError(f"{listing} lists {len(stems)} images; expected 1 to {MAX_IMAGES} (use a limit)")
    images, labels = [], []
    for stem in stems:
        image_path = _find_image(root / "JPEGImages", stem)
        label_path = root / "SegmentationClass" / f"{stem}.png"
        if image_path is None or not label_path.is_file():
            raise DataError(f"{stem}: no image in {root / 'JPEGImages'} or no label {label_path}")
        try:
            with Image.open(image_path) as image, Image.open(label_path) as label:
                if image.size != label.size:
                    raise DataError(f"{stem}: image {image.size} and label {label.size} differ in size")
                images.append(_square(image.convert("RGB"), size, Image.BILINEAR))
                labels.append(_square(label if label.mode in ("P", "L") else label.convert("L"), size, Image.NEAREST))
        except (OSError, ValueError) as exc:
            raise DataError(f"{stem}: cannot read ({exc})") from None
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return pixels, torch.from_numpy(np.stack(labels).astype(np.int64))


def num_voc_classes(*labels: torch.Tensor) -> int:
    """1 + the largest class index in ``labels`` (void excluded)."""
    top = max(int(label[label != IGNORE].max()) if (label != IGNORE).any() else 0 for label in labels)
    return top + 1


def _find_image(folder: Path, stem: str) -> Path | None:
    for suffix in (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG"):
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    return None


def _square(image: Image.Image, size: int, resample: int) -> np.ndarray:
    """Shorter side to ``size``, then the centre ``size x size``."""
    width, height = image.size
    scale = size / min(width, height)
    resized = image.resize((max(size, round(width * scale)), max(size, round(height * scale))), resample)
    left, top = (resized.width - size) // 2, (resized.height - size) // 2
    return np.asarray(resized.crop((left, top, left + size, top + size)))
