"""Export formats, one file each, registered in ``EXPORT_FORMATS`` (see ``base.py`` for how to add one).

Importing a format's module registers it: a new back-end is one file and one name on the first import line.
"""

from hjepa.export.formats import hjepa, levels, onnx, triton, trt  # noqa: F401
from hjepa.export.formats.base import (
    EXPORT_FORMATS,
    ExportFormat,
    ExportOptions,
    LevelJob,
    format_names,
    resolve_formats,
)

__all__ = ["EXPORT_FORMATS", "ExportFormat", "ExportOptions", "LevelJob", "format_names", "resolve_formats"]
