"""What an export is asked to do (:class:`ExportOptions`) and what an export format is: a registry entry that
writes its files for one level, or once for the whole model.

A new back-end is one file in this folder with ``@EXPORT_FORMATS.register("name")`` on an :class:`ExportFormat`
subclass, and one import line in ``formats/__init__.py``. ``hjepa.export.export`` runs the formats asked for (and
those they build on, ``requires``) in ``order``, level by level, inside the staging folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hjepa.config import Config
from hjepa.export.errors import ExportError
from hjepa.export.onnx_export import check_opset
from hjepa.export.source import ExportSource
from hjepa.export.staging import StagedDirectory
from hjepa.export.verify import sample_inputs
from hjepa.inference.artifacts.artifact import LoadedModel
from hjepa.logs import Log
from hjepa.registry import Registry

EXPORT_FORMATS = Registry("export format")


@dataclass
class ExportOptions:
    """How to export. ``formats``: any of onnx / trt / triton (ONNX is always written: the others build on it).

    ``batch``: verification batch (default ``cfg.export.verify_batch``), and the fixed batch of a static export
    (default 1). ``img_size``: default the trained size. ``knn_*``: subset sizes of the int8 k-NN comparison.
    ``fuse``: write each attention block as one onnxruntime ``com.microsoft.Attention`` node (``fuse.py``; fp32 and
    int8 files only, and not when a TensorRT engine is built from the file, since TensorRT cannot parse it).
    """

    formats: tuple[str, ...] = ("onnx",)  # names in hjepa.export.formats.EXPORT_FORMATS
    batch: int | None = None
    dynamic: bool = True
    half: bool = False
    int8: bool = False
    opset: int | None = None
    simplify: bool = False
    img_size: int | None = None
    uint8_input: bool = False
    knn_train_samples: int = 5000  # 2,000 test images resolve 0.05 pt, and the target is "within 0.5 pt"
    knn_test_samples: int = 2000
    fuse: bool = True

    @property
    def precision(self) -> str:
        return "int8" if self.int8 else "fp16" if self.half else "fp32"

    def validate(self) -> None:
        """ExportError for settings that cannot work, named before anything is read or written."""
        for fmt in resolve_formats(self.formats):
            fmt.check(self)
        if self.half and self.int8:
            raise ExportError("--half and --int8 exclude each other; choose one precision")
        if self.batch is not None and self.batch < 1:
            raise ExportError(f"--batch must be at least 1, got {self.batch}")
        if self.img_size is not None and self.img_size < 1:
            raise ExportError(f"--img-size must be positive, got {self.img_size}")
        if self.opset is not None:
            check_opset(self.opset)


@dataclass
class LevelJob:
    """One level being exported: the settings every format step reads, and the manifest entry they fill in.

    ``batch``: the fixed batch of a static export; ``batches``: the batch sizes verified; ``profile``: TensorRT's
    (min, opt, max) batch profile, whose max is also the Triton ``max_batch_size``. ``resources``: what each format's
    :meth:`ExportFormat.prepare` returned (the ``tensorrt`` module), by format name.
    """

    source: ExportSource  # the torch model, which a large level drops once its graph is on disk
    cfg: Config
    level: int
    out: Path
    options: ExportOptions
    img_size: int
    mean: Sequence[float]
    std: Sequence[float]
    sha: str
    resources: dict[str, Any]
    provenance: dict[str, Any] | None = None  # source, licence: written into every level's metadata
    entry: dict[str, Any] = field(default_factory=dict)  # this level's manifest entry
    checks: dict[str, Any] = field(default_factory=dict)  # verification figures, by back-end
    headline: str = ""  # the one line printed for this level
    notes: list[str] = field(default_factory=list)  # appended to the headline after "; "
    onnx_path: Path | None = None
    session: Any = None  # the onnxruntime session of the fp32 / fp16 file as written (None for int8: TensorRT,
    # its only reader, refuses --int8, and a ViT-H session is gigabytes)
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        options, export_cfg = self.options, self.cfg.export
        self.input_format = "uint8_nhwc" if options.uint8_input else "float_nchw"
        verify_batch = options.batch or export_cfg.verify_batch
        self.batch = verify_batch if options.dynamic else (options.batch or 1)
        self.batches = sorted({1, verify_batch}) if options.dynamic else [self.batch]
        self.profile = tuple(export_cfg.profile_batches) if options.dynamic else (self.batch,) * 3

    @property
    def model(self) -> torch.nn.Module:
        return self.source.model  # read again from its file if a large level dropped it

    def make_inputs(self, size: int) -> np.ndarray:
        """A deterministic batch of ``size`` inputs in the model's input format (seeded by the level)."""
        return sample_inputs(size, self.img_size, self.input_format, self.mean, self.std, seed=self.level + 1)

    def summary(self) -> str:
        return self.headline + "".join(f"; {note}" for note in self.notes)


class ExportFormat:
    """One export format. ``per_level``: :meth:`export_level` runs for every level; otherwise :meth:`export_model`
    runs once. ``requires``: the formats whose output this one builds on (TensorRT and Triton need the ONNX file)."""

    name: str = ""
    order: int = 0
    per_level: bool = True
    requires: tuple[str, ...] = ()

    def check(self, options: ExportOptions) -> None:
        """Raise ExportError for options this format cannot honour (before anything is read or written)."""

    def prepare(self, options: ExportOptions) -> Any:
        """What the format needs from this machine (a back-end module), checked before any work; None if nothing."""
        return None

    def start(self, stage: StagedDirectory, resource: Any) -> None:
        """Called once with the staging folder before the first level (to carry over a cache, say)."""

    def export_level(self, job: LevelJob) -> None:
        """Write this format's files for ``job.level`` into ``job.out`` and record them in ``job.entry``."""

    def export_model(self, loaded: LoadedModel, out: Path, manifest: dict[str, Any], log: Log) -> None:
        """Write this format's whole-model files into ``out`` and record them in ``manifest``."""


def format_names() -> list[str]:
    return EXPORT_FORMATS.names()


def resolve_formats(names: Sequence[str]) -> list[ExportFormat]:
    """The formats ``names`` asks for plus those they require, in running order; an unknown name is ExportError."""
    unknown = [name for name in names if name not in EXPORT_FORMATS]
    if unknown:
        raise ExportError(f"unknown format {unknown[0]!r}; valid formats: {', '.join(format_names())}")
    picked: dict[str, ExportFormat] = {}
    pending = list(names)
    while pending:
        name = pending.pop()
        if name not in picked:
            picked[name] = EXPORT_FORMATS.get(name)()
            pending.extend(picked[name].requires)
    return sorted(picked.values(), key=lambda fmt: fmt.order)
