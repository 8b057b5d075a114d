"""What every source format provides: ``IMPORTERS`` (name -> importer), the loaded source, and the conversion.

An importer ``matches(source)`` (for ``--from auto``) and ``convert(source, options)``: the encoder's tensors in
hjepa's ``ViTEncoder`` names, its sizes, and how to run the independent reference forward on the raw tensors.
"""

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
    """``encoder``: which encoder of a training checkpoint (``target``, as the I-JEPA paper evaluates, or
    ``context``). ``arch`` / ``num_heads``: the head count when the weights cannot tell it. ``levels``: default as
    deep as the grid allows (at most 4). ``head``: ``identity`` (features as the source evaluates them) or
    ``layernorm`` (the layer-normed training target). ``mean`` / ``std``: override the source's normalisation."""

    encoder: str = "target"
    arch: str | None = None
    num_heads: int | None = None
    levels: int | None = None
    head: str = "identity"
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None


@dataclass
class LoadedSource:
    """A source file read safely: ``state`` (what ``torch.load(weights_only=True)`` / safetensors returned),
    ``config`` (a Hugging Face ``config.json`` beside it, when there is one), the file and its sha256."""

    path: Path
    state: Any
    sha256: str
    config: dict[str, Any] = field(default_factory=dict)
    preprocessor: dict[str, Any] = field(default_factory=dict)


@dataclass
class Conversion:
    """A source encoder in hjepa's names (``ViTEncoder`` state-dict keys) plus what the artifact records."""

    weights: dict[str, torch.Tensor]
    architecture: EncoderArchitecture  # the source's sizes, norm eps and class token (levels and head: the options)
    raw: dict[str, torch.Tensor]  # the source tensors the reference forward reads, with the source's names
    reference: ReferenceSpec
    licence: str | None
    provenance: dict[str, Any] = field(default_factory=dict)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD


class Importer(Protocol):
    name: str

    def matches(self, source: LoadedSource) -> bool: ...

    def convert(self, source: LoadedSource, options: ImportOptions) -> Conversion: ...
