"""Foreign checkpoints in: I-JEPA, Hugging Face ``IJepaModel``, timm ViTs and the seed H-JEPA -> encoder artifact.

``import_encoder(source, out, ImportOptions(...))`` converts exactly (every tensor consumed once, shape-checked),
proves parity against an independent reference forward (``reference.py``) and writes the artifact that
``hjepa-export``, ``hjepa-eval`` and ``hjepa-serve`` take. One file per source format, registered in ``IMPORTERS``.
"""

from hjepa.importers.api import FORMATS, import_encoder
from hjepa.importers.base import IMPORTERS, ImportOptions
from hjepa.importers.errors import ImportSourceError

__all__ = ["FORMATS", "IMPORTERS", "ImportOptions", "ImportSourceError", "import_encoder"]
