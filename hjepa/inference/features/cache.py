"""Extracted features on disk (safetensors, written atomically), so each model, level and split is encoded once.

An unreadable or mismatched file is a miss, with a warning naming it.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from hjepa.files import atomic_path

_FORMAT = "hjepa-features"
_VERSION = "1"


def _slug(text: str) -> str:
    """``text``, safe in a file name."""
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", text).strip("-")[:40] or "x"


class FeatureCache:
    """Features ``[N, D]`` and labels ``[N]`` stored as ``ROOT/KEY.safetensors``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def key(self, source_hash: str, level: int, dataset: str, split: str, extra: str = "") -> str:
        """Dataset, split and level readably, plus a digest of every field; ``extra``: the rest that matters."""
        if not source_hash:
            raise ValueError("source_hash is empty: pass a hash of the checkpoint or exported model")
        fields = {"source": source_hash, "level": int(level), "dataset": dataset, "split": split, "extra": extra}
        digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:24]
        return f"{_slug(dataset)}_{_slug(split)}_level{int(level)}_{digest}"

    def path(self, key: str) -> Path:
        if not key or "/" in key or "\\" in key or key.startswith("."):
            raise ValueError(f"invalid cache key {key!r}: use FeatureCache.key(...)")
        return self.root / f"{key}.safetensors"

    def load(self, key: str) -> tuple[Tensor, Tensor] | None:
        """``(features [N, D], labels [N])``, or None when absent or unreadable."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                features, labels = handle.get_tensor("features"), handle.get_tensor("labels")
            _check(features, labels)
            if metadata.get("format") != _FORMAT or metadata.get("key") != key:
                raise ValueError(f"metadata {metadata} does not match key {key!r}")
        except Exception as error:  # any unreadable file is a miss
            warnings.warn(f"ignoring corrupt feature cache file {path}: {error}", stacklevel=2)
            return None
        return features, labels

    def save(self, key: str, features: Tensor, labels: Tensor) -> Path:
        """Writes ``features [N, D]``, ``labels [N]`` atomically."""
        _check(features, labels)
        path = self.path(key)
        self.root.mkdir(parents=True, exist_ok=True)
        tensors = {
            "features": features.detach().cpu().contiguous(),
            "labels": labels.detach().cpu().long().contiguous(),
        }
        metadata = {"format": _FORMAT, "version": _VERSION, "key": key}
        with atomic_path(path) as temporary:
            save_file(tensors, str(temporary), metadata=metadata)
        return path

    def store(self, key: str, features: Tensor, labels: Tensor) -> Path | None:
        """:meth:`save`, but a failed write only warns: computed features are kept."""
        try:
            return self.save(key, features, labels)
        except OSError as error:  # a full disk or a read-only cache
            warnings.warn(f"cannot write feature cache {self.path(key)}: {error}; continuing without it", stacklevel=2)
            return None

    def get_or_compute(self, key: str, fn: Callable[[], tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor, bool]:
        """``(features, labels, hit)``: loaded, or computed by ``fn()`` and stored."""
        cached = self.load(key)
        if cached is not None:
            return cached[0], cached[1], True
        features, labels = fn()
        self.store(key, features, labels)
        return features, labels, False


def _check(features: Tensor, labels: Tensor) -> None:
    if not isinstance(features, Tensor) or not isinstance(labels, Tensor):
        raise TypeError(f"features and labels must be tensors, got {type(features).__name__}, {type(labels).__name__}")
    if features.ndim != 2 or labels.ndim != 1 or features.shape[0] != labels.shape[0]:
        raise ValueError(
            f"expected features [N, D] and labels [N], got {tuple(features.shape)} and {tuple(labels.shape)}"
        )
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
