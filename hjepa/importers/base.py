"""``IMPORTERS``: each ``matches(source)`` and ``convert``s it to ``ViTEncoder`` names plus a reference spec."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from hjepa.importers.reference import ReferenceSpec
from hjepa.models.pretrained import EncoderArchitecture
from hjepa.registry import Registry

IMPORTERS = Registry("source format")
ENCODERS = ("target", "context")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ImportOptions:
    """``encoder="target"`` as I-JEPA evaluates; ``head="identity"`` gives features as the source evaluates them."""

    encoder: str = "target"
    arch: str | None = None
    num_heads: int | None = None
    levels: int | None = None
    head: str = "identity"
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None


@dataclass
class LoadedSource:
    """A source file read safely, with any Hugging Face ``config.json`` beside it."""

    path: Path
    state: Any
    sha256: str
    config: dict[str, Any] = field(default_factory=dict)
    preprocessor: dict[str, Any] = field(default_factory=dict)


@dataclass
class Conversion:
    """A source encoder in ``ViTEncoder`` names, plus what the artifact records."""

    weights: dict[str, torch.Tensor]
    architecture: EncoderArchitecture  # levels and head come from the options
    raw: dict[str, torch.Tensor]  # source names, for the reference forward
    reference: ReferenceSpec
    licence: str | None
    provenance: dict[str, Any] = field(default_factory=dict)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD


class Importer(Protocol):
    name: str

    def matches(self, source: LoadedSource) -> bool: ...

    def convert(self, source: LoadedSource, options: ImportOptions) -> Conversion: ...
