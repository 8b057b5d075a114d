"""Export: per-level ``LevelEncoder`` -> verified ONNX (fp32 / fp16 / int8), TensorRT engines, Triton layout.

``export(checkpoint, levels="all", out_dir, ExportOptions(...))`` writes ``OUT/level{K}.onnx`` (+ ``.engine``),
``OUT/manifest.json`` and optionally ``OUT/triton/``; ``export_level`` does one level. See ``hjepa-export --help``.
"""

from hjepa.export.api import (
    FORMATS,
    ExportOptions,
    checked_level_encoder,
    default_out_dir,
    export,
    export_level,
)
from hjepa.export.errors import ExportError
from hjepa.export.manifest import METADATA_KEYS, manifest_dict, read_metadata
from hjepa.export.verify import Tolerance, tolerance_for
from hjepa.models.level_encoder import LevelEncoder

__all__ = [
    "FORMATS",
    "METADATA_KEYS",
    "ExportError",
    "ExportOptions",
    "LevelEncoder",
    "Tolerance",
    "checked_level_encoder",
    "default_out_dir",
    "export",
    "export_level",
    "manifest_dict",
    "read_metadata",
    "tolerance_for",
]
