"""Decoding and preprocessing in workers or Ray tasks: hjepa-eval's pipeline exactly, so features match it.

A file that cannot be embedded is a :class:`Skip` with a reason, never an exception that stops the run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from hjepa.data import EvalTransform
from hjepa.data.imagefolder import DEFAULT_STORAGE_SIZE, decode_image
from hjepa.inference.artifacts.metadata import RuntimeMetadata
from hjepa.inference.runtimes.images import ImageError, check_pixels

DEFAULT_MAX_PIXELS = 100_000_000


@dataclass(frozen=True)
class Preprocessing:
    """File -> model input; resume refuses a different one."""

    img_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    storage_size: int = DEFAULT_STORAGE_SIZE
    max_pixels: int = DEFAULT_MAX_PIXELS

    @classmethod
    def for_model(cls, metadata: RuntimeMetadata, max_pixels: int = DEFAULT_MAX_PIXELS) -> Preprocessing:
        return cls(metadata.img_size, tuple(metadata.mean), tuple(metadata.std), max_pixels=max_pixels)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["mean"], out["std"] = list(self.mean), list(self.std)
        out["pipeline"] = "hjepa-eval: RGB, shorter side to storage_size, center square; EvalTransform"
        return out

    def transform(self) -> EvalTransform:
        return EvalTransform(self.img_size, mean=self.mean, std=self.std)


@dataclass(frozen=True)
class Skip:
    """An input left out, and why."""

    reason: str
    message: str


def classify(message: str) -> str:
    text = message.lower()
    if "truncated" in text or "broken data stream" in text or "premature end" in text:
        return "truncated"
    if "cannot identify image" in text or "not an image" in text:
        return "not-an-image"
    if "pixels" in text and ("limit" in text or "exceeds" in text):
        return "too-large"
    return "unreadable"


def decode_file(path: str, preprocessing: Preprocessing) -> torch.Tensor | Skip:
    """A file -> uint8 ``[3, storage, storage]``, or a :class:`Skip`."""
    try:
        with Image.open(path) as image:  # header only: refuse a pixel bomb undecoded
            check_pixels(path.rsplit("/", 1)[-1], image.size, preprocessing.max_pixels)
        return decode_image(path, preprocessing.storage_size)
    except FileNotFoundError:
        return Skip("missing", f"{path} does not exist")
    except ImageError as exc:
        return Skip("too-large", str(exc))
    except Exception as exc:  # noqa: BLE001  a 10M-image run goes on
        message = f"{type(exc).__name__}: {exc}"[:300]
        return Skip(classify(message), message)


class ItemDataset(torch.utils.data.Dataset):
    """Position -> ``(position, uint8 [C, H, W] or Skip)``."""

    def __init__(self, paths: list[str], dataset: Any, preprocessing: Preprocessing) -> None:
        self.paths = paths
        self.dataset = dataset
        self.preprocessing = preprocessing

    def __len__(self) -> int:
        return len(self.paths) if self.dataset is None else len(self.dataset)

    def __getitem__(self, position: int) -> tuple[int, torch.Tensor | Skip]:
        if self.dataset is not None:
            return position, self.dataset[position][0]
        return position, decode_file(self.paths[position], self.preprocessing)


class Collate:
    """Normalises in the worker, so the main process only encodes: ``(positions, [b, 3, S, S], skips)``."""

    def __init__(self, preprocessing: Preprocessing) -> None:
        self.transform = preprocessing.transform()

    def __call__(self, items: list[tuple[int, Any]]) -> tuple[list[int], torch.Tensor | None, list[tuple[int, Skip]]]:
        good = [(position, item) for position, item in items if not isinstance(item, Skip)]
        skipped = [(position, item) for position, item in items if isinstance(item, Skip)]
        if not good:
            return [], None, skipped
        batch = self.transform(torch.stack([item for _, item in good]))
        return [position for position, _ in good], batch, skipped


def worker_init(_: int) -> None:
    # one thread each, or N workers x N threads fight the encoder
    torch.set_num_threads(1)


def preprocess_paths(paths: list[str], preprocessing: Preprocessing) -> tuple[np.ndarray, list[Skip | None]]:
    """Paths -> (readable ones as float32 ``[b, 3, S, S]``, a Skip or None per path)."""
    items = [decode_file(path, preprocessing) for path in paths]
    good = [item for item in items if not isinstance(item, Skip)]
    size = preprocessing.img_size
    batch = preprocessing.transform()(torch.stack(good)).numpy() if good else np.zeros((0, 3, size, size), np.float32)
    return batch, [item if isinstance(item, Skip) else None for item in items]
