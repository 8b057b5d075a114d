"""Foreign checkpoints in (I-JEPA, Hugging Face, timm, the seed H-JEPA), converted exactly, proven by parity.

One file per source format, registered in ``IMPORTERS``.
"""

from hjepa.importers.api import FORMATS, import_encoder
from hjepa.importers.base import IMPORTERS, ImportOptions
from hjepa.importers.errors import ImportSourceError

__all__ = ["FORMATS", "IMPORTERS", "ImportOptions", "ImportSourceError", "import_encoder"]
