"""The app's neighbour gallery: labelled images embedded once per level, cached so a restart does not re-embed.

By default the model's own test split, or the shipped examples when that is not here.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from hjepa.errors import OptionError
from hjepa.inference.features.cache import FeatureCache
from hjepa.inference.features.collection import is_collection
from hjepa.inference.runtimes.images import IMAGE_SUFFIXES, read_image
from hjepa.inference.runtimes.runtime import Runtime
from hjepa.serve.neighbour import Neighbour

if TYPE_CHECKING:
    from hjepa.serve.collection_gallery import CollectionGallery

EXAMPLES_DIR = Path(__file__).parent / "examples"


class Gallery:
    """uint8 ``[H, W, 3]`` images of any size with ``labels`` into ``classes``; ``cache_dir=None``: memory only."""

    def __init__(
        self,
        images: list[np.ndarray],
        labels: list[int],
        classes: list[str],
        name: str,
        split: str = "gallery",
        description: str = "",
        cache_dir: str | Path | None = None,
    ) -> None:
        if not images or len(images) != len(labels):
            raise ValueError(f"a gallery needs images with one label each, got {len(images)} and {len(labels)}")
        self.images = images
        self.labels = [int(v) for v in labels]
        self.classes = list(classes)
        self.name = name
        self.split = split
        self.description = description or f"{name} ({len(images)} images)"
        self.cache = FeatureCache(cache_dir) if cache_dir is not None else None
        self._features: dict[tuple[str, str, int], np.ndarray] = {}
        digest = hashlib.sha256()
        for image in images:
            digest.update(str(image.shape).encode())
            digest.update(image.tobytes())
        self.digest = digest.hexdigest()[:16]

    def __len__(self) -> int:
        return len(self.images)

    def features(self, runtime: Runtime, level: int) -> np.ndarray:
        """Normalised pooled float32 ``[N, D]``, embedded once."""
        level = runtime.check_level(level)
        memo = (runtime.identity, runtime.backend, level)
        if memo in self._features:
            return self._features[memo]

        def compute() -> tuple[torch.Tensor, torch.Tensor]:
            _, pooled = runtime.embed(self.images, level)
            return torch.from_numpy(pooled), torch.tensor(self.labels, dtype=torch.long)

        if self.cache is not None:
            extra = f"{runtime.backend}|{runtime.metadata.img_size}|{self.digest}"
            key = self.cache.key(runtime.identity, level, self.name, self.split, extra=extra)
            pooled, _, _ = self.cache.get_or_compute(key, compute)
        else:
            pooled, _ = compute()
        features = pooled.float().numpy()
        features /= np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
        self._features[memo] = features
        return features

    def warm(self, runtime: Runtime, level: int) -> None:
        """Embed now, not on the first request."""
        self.features(runtime, level)

    def neighbours(self, runtime: Runtime, pooled: np.ndarray, level: int, k: int = 8) -> list[Neighbour]:
        """The ``k`` images closest (cosine) to ``pooled [D]``."""
        features = self.features(runtime, level)
        query = np.asarray(pooled, np.float32).reshape(-1)
        if query.shape[0] != features.shape[1]:
            raise ValueError(f"query has {query.shape[0]} dims but gallery features have {features.shape[1]}")
        similarity = features @ (query / max(float(np.linalg.norm(query)), 1e-12))
        order = np.argsort(-similarity, kind="stable")[: max(1, min(k, len(self)))]
        return [Neighbour(self.images[i], self.classes[self.labels[i]], float(similarity[i]), int(i)) for i in order]


def thumbnail(image: np.ndarray, size: int = 96) -> np.ndarray:
    """A display copy: tiny images blown up sharp (nearest), large ones shrunk."""
    height, width = image.shape[:2]
    scale = size / max(height, width)
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resample = Image.NEAREST if scale > 1 else Image.BILINEAR
    return np.asarray(Image.fromarray(image).resize(new_size, resample))


def folder_gallery(directory: Path, size: int, cache_dir: str | Path | None = None) -> Gallery:
    """Images under ``directory``, labelled by folder, thinned to ``size``; unreadable ones skipped."""
    files = sorted(p for p in directory.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise OptionError(f"gallery folder {directory} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    files = [files[i] for i in _spread(size, len(files))]
    images, names = [], []
    for path in files:
        try:
            images.append(read_image(path))
        except ValueError:
            continue
        names.append(path.parent.name if path.parent != directory else path.stem)
    if not images:
        raise OptionError(f"no image under {directory} could be decoded")
    classes = sorted(set(names))
    labels = [classes.index(name) for name in names]
    return Gallery(
        images,
        labels,
        classes,
        name=directory.name or "folder",
        split="folder",
        description=f"folder {directory} ({len(images)} images)",
        cache_dir=cache_dir,
    )


def dataset_gallery(name: str, size: int, data_dir: str | None = None, cache_dir: str | Path | None = None) -> Gallery:
    """``size`` images spread over ``name``'s test split; DataError when absent."""
    from hjepa.data import build_dataset
    from hjepa.inference.features.extract import spread_arrays

    dataset = build_dataset(name, "test", data_dir=data_dir, download=False)
    images, labels = spread_arrays(dataset, size)
    pixels = images.permute(0, 2, 3, 1).numpy()
    if pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    return Gallery(
        list(pixels),
        labels.tolist(),
        dataset.classes,
        name=name,
        split="test",
        description=f"{name} test split ({len(labels)} of {len(dataset)} images)",
        cache_dir=cache_dir,
    )


def examples_gallery(cache_dir: str | Path | None = None, reason: str = "") -> Gallery:
    """The shipped examples, one class each: the fallback."""
    gallery = folder_gallery(EXAMPLES_DIR, size=1000, cache_dir=cache_dir)
    gallery.description = f"shipped examples ({len(gallery)} images){': ' + reason if reason else ''}"
    return gallery


def gallery_hint(dataset: str) -> str:
    """A caption when the model's dataset is not here (never an error's text)."""
    if dataset == "imagefolder":  # imported encoders have none
        return "pass --gallery FOLDER to search your own images"
    return f"the {dataset} test split is not on this machine; pass --data-dir DIR or --gallery FOLDER"


def build_gallery(
    runtime: Runtime,
    source: str | Path | None = None,
    size: int = 500,
    data_dir: str | None = None,
    cache_dir: str | Path | None = None,
) -> Gallery | CollectionGallery:
    """From None (the model's test split or the examples), an ``hjepa-embed`` folder, images, or a dataset name."""
    if size < 1:
        raise OptionError(f"gallery size must be >= 1, got {size}")
    if source is None:
        dataset = runtime.metadata.dataset
        if not dataset:
            return examples_gallery(cache_dir, reason="the model does not record its dataset")
        try:
            return dataset_gallery(dataset, size, data_dir, cache_dir)
        except (ValueError, OSError):  # DataError: not downloaded
            return examples_gallery(cache_dir, reason=gallery_hint(dataset))
    path = Path(source).expanduser()
    if path.is_dir() and is_collection(path):
        from hjepa.serve.collection_gallery import CollectionGallery

        return CollectionGallery(path, runtime, data_dir)
    if path.is_dir():
        return folder_gallery(path, size, cache_dir)
    if path.exists() or len(path.parts) > 1:  # a path, not a dataset name
        state = "is a file" if path.exists() else "does not exist"
        raise OptionError(f"gallery {source} {state}; --gallery takes a folder of images or a dataset name")
    return dataset_gallery(str(source), size, data_dir, cache_dir)


def _spread(count: int, total: int) -> list[int]:
    from hjepa.inference.features.extract import spread_subset

    return spread_subset(count, total).tolist()
