"""The user errors of ``hjepa-import``: a source that cannot be read, recognised or converted exactly."""

from __future__ import annotations

from hjepa.errors import HJEPAError


class ImportSourceError(HJEPAError, ValueError):
    """Says why a source cannot convert, and what would work."""
