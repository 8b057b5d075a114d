"""The user errors of ``hjepa-import``: a source that cannot be read, recognised or converted exactly."""

from __future__ import annotations

from hjepa.errors import HJEPAError


class ImportSourceError(HJEPAError, ValueError):
    """A source checkpoint that cannot become an encoder artifact; the message says why and what would work."""
