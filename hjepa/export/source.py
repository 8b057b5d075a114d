"""The model being exported, held so that it can be dropped while onnxruntime or the quantiser holds a large
graph (a ViT-H is 2.5 GB of torch weights), and read again from its file only if a later level or format needs it.
"""

from __future__ import annotations

import gc
from pathlib import Path

import torch

from hjepa.inference.artifacts.artifact import LoadedModel, load_source_model


class ExportSource:
    """A checkpoint or encoder artifact: its config, spec and statistics always, its torch model on demand."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._loaded: LoadedModel | None = load_source_model(path, "cpu")
        self.config, self.spec = self._loaded.config, self._loaded.spec
        self.mean, self.std = self._loaded.mean, self._loaded.std
        self.reloads = 0

    @property
    def loaded(self) -> LoadedModel:
        if self._loaded is None:
            self._loaded = load_source_model(self.path, "cpu")
            self.reloads += 1
        return self._loaded

    @property
    def model(self) -> torch.nn.Module:
        return self.loaded.model

    def release(self) -> None:
        """Drop the torch model: its memory is freed once no module built on its weights is left."""
        self._loaded = None
        gc.collect()
