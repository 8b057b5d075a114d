"""One interface over PyTorch, ONNX and TensorRT: the same preprocessing, ``embed(images, level)`` everywhere.

Importing this module pulls in neither onnxruntime nor TensorRT.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hjepa.device import DeviceUnavailableError, resolve_device
from hjepa.errors import OptionError
from hjepa.inference.artifacts.levels import check_level
from hjepa.inference.artifacts.metadata import RuntimeMetadata, RuntimeSourceError, RuntimeUnavailableError
from hjepa.inference.runtimes.images import batch_to_list, center_crop_resize, to_rgb_array
from hjepa.registry import Registry

if TYPE_CHECKING:
    from hjepa.config import Config

__all__ = ["RUNTIMES", "Runtime", "RuntimeMetadata", "RuntimeSourceError", "RuntimeUnavailableError"]

# a new back-end: one file, one register line
RUNTIMES = Registry("runtime")


class Runtime(ABC):
    """Preprocessing, level checks and batching; a back-end implements ``_forward``.

    ``identity`` hashes the weights (for caches); ``config`` is the training config when the artifact has one.
    """

    backend: str
    metadata: RuntimeMetadata
    max_batch: int = 64
    config: Config | None = None
    identity: str = ""
    source: str = ""

    def __init__(self) -> None:
        # Gradio calls from threads; a TensorRT context serves one at a time
        self._forward_lock = threading.Lock()

    @property
    def levels(self) -> list[int]:
        """Levels served: one for an ONNX file, all for a checkpoint."""
        return sorted(self.metadata.grids)

    def check_level(self, level: int) -> int:
        """``level`` as an int, or a LevelError naming the served levels."""
        return check_level(level, self.levels, self.source or "this runtime")

    def crop(self, images: Any) -> np.ndarray:
        """Images (see :func:`batch_to_list`) -> uint8 ``[B, S, S, 3]``, S = ``img_size``."""
        items = batch_to_list(images)
        if not items:
            raise OptionError("no images to embed")
        size = self.metadata.img_size
        return np.stack([center_crop_resize(to_rgb_array(item), size) for item in items])

    def normalise(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 ``[B, S, S, 3]`` -> float32 ``[B, 3, S, S]`` with the metadata's mean / std."""
        mean = np.asarray(self.metadata.mean, np.float32).reshape(1, 3, 1, 1)
        std = np.asarray(self.metadata.std, np.float32).reshape(1, 3, 1, 1)
        return (pixels.transpose(0, 3, 1, 2).astype(np.float32) / 255.0 - mean) / std

    def preprocess(self, images: Any) -> np.ndarray:
        """Images -> center square, resized, normalised float32 ``[B, 3, S, S]``."""
        return self.normalise(self.crop(images))

    def embed(self, images: Any, level: int, batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Images (see :func:`batch_to_list`) -> tokens ``[B, N_k, D]``, pooled ``[B, D]``, float32."""
        level = self.check_level(level)
        return self.embed_preprocessed(self.preprocess(images), level, batch_size)

    def embed_preprocessed(
        self, batch: np.ndarray | torch.Tensor, level: int, batch_size: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Already normalised float ``[B, 3, S, S]`` (e.g. from ``EvalTransform``) -> (tokens, pooled) as ``embed``."""
        level = self.check_level(level)
        if isinstance(batch, torch.Tensor):
            batch = batch.detach().float().cpu().numpy()
        size = self.metadata.img_size
        if batch.ndim != 4 or batch.shape[1:] != (3, size, size):
            raise ValueError(f"expected a normalised batch [B, 3, {size}, {size}], got {tuple(batch.shape)}")
        chunk = max(1, min(batch_size or self.max_batch, self.max_batch))
        tokens, pooled = [], []
        for start in range(0, batch.shape[0], chunk):
            part = np.ascontiguousarray(batch[start : start + chunk], np.float32)
            with self._forward_lock:
                part_tokens, part_pooled = self._forward(part, level)
            tokens.append(np.asarray(part_tokens, np.float32))
            pooled.append(np.asarray(part_pooled, np.float32))
        return np.concatenate(tokens), np.concatenate(pooled)

    def embed_levels(
        self, batch: np.ndarray | torch.Tensor, levels: list[int], with_tokens: bool = False
    ) -> dict[int, tuple[np.ndarray | None, np.ndarray]]:
        """Normalised ``[B, 3, S, S]`` -> ``{level: (tokens [B, N_k, D] or None, pooled [B, D])}``.

        The caller checks levels. ``with_tokens=False`` leaves token maps on the device.
        """
        if isinstance(batch, torch.Tensor):
            batch = batch.detach().float().cpu().numpy()
        size = self.metadata.img_size
        if batch.ndim != 4 or batch.shape[1:] != (3, size, size):
            raise ValueError(f"expected a normalised batch [B, 3, {size}, {size}], got {tuple(batch.shape)}")
        chunk = self.max_batch
        parts: dict[int, tuple[list[np.ndarray], list[np.ndarray]]] = {level: ([], []) for level in levels}
        for start in range(0, batch.shape[0], chunk):
            part = np.ascontiguousarray(batch[start : start + chunk], np.float32)
            with self._forward_lock:
                out = self._forward_levels(part, levels, with_tokens)
            for level, (tokens, pooled) in out.items():
                if with_tokens:
                    parts[level][0].append(np.asarray(tokens, np.float32))
                parts[level][1].append(np.asarray(pooled, np.float32))
        return {
            level: (np.concatenate(tokens) if with_tokens else None, np.concatenate(pooled))
            for level, (tokens, pooled) in parts.items()
        }

    def _forward_levels(
        self, batch: np.ndarray, levels: list[int], with_tokens: bool
    ) -> dict[int, tuple[np.ndarray | None, np.ndarray]]:
        """One chunk at several levels; by default one ``_forward`` per level."""
        out = {}
        for level in levels:
            tokens, pooled = self._forward(batch, level)
            out[level] = (tokens if with_tokens else None, pooled)
        return out

    def to_pixels(self, batch: np.ndarray) -> np.ndarray:
        """Normalised ``[B, 3, S, S]`` -> uint8 ``[B, S, S, 3]`` for models that normalise inside."""
        mean = np.asarray(self.metadata.mean, np.float32).reshape(1, 3, 1, 1)
        std = np.asarray(self.metadata.std, np.float32).reshape(1, 3, 1, 1)
        pixels = np.clip(np.round((batch * std + mean) * 255.0), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(pixels.transpose(0, 2, 3, 1))

    @abstractmethod
    def _forward(self, batch: np.ndarray, level: int) -> tuple[np.ndarray, np.ndarray]:
        """One chunk: float32 ``[b, 3, S, S]`` (b <= max_batch) -> (tokens ``[b, N_k, D]``, pooled ``[b, D]``)."""

    def describe(self) -> str:
        """One line for logs and the app's status box."""
        meta = self.metadata
        grids = ", ".join(f"L{k}: {h}x{w}x{meta.embed_dims[k]}" for k, (h, w) in sorted(meta.grids.items()))
        return f"{self.backend} · {meta.img_size}px, patch {meta.patch_size} · {grids} · {meta.precision}"

    def provenance(self) -> str:
        """An imported model's source and licence for the app's header; empty for a checkpoint."""
        record = self.metadata.provenance
        parts = []
        if record.get("source_format"):  # written by hjepa-import
            name = record.get("model_name") or Path(str(record.get("source", "?"))).name
            details = [str(record["source_format"])]
            if record.get("encoder"):
                details.append(f"{record['encoder']} encoder")
            if record.get("epoch") is not None:
                details.append(f"epoch {record['epoch']}")
            parts.append(f"imported from {name} ({', '.join(details)})")
        if record.get("licence"):
            parts.append(f"licence: {record['licence']}")
        return " · ".join(parts)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(source={self.source!r}, backend={self.backend!r}, levels={self.levels})"


def resolve_torch_device(device: str) -> torch.device:
    """``auto`` -> CUDA if present, else CPU; ``cuda`` without a GPU is an error."""
    try:
        return resolve_device(device)
    except DeviceUnavailableError as exc:
        raise RuntimeUnavailableError(str(exc)) from None
