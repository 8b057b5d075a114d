"""The one error type of the export package: a user-facing problem, reported as a single line by the CLI."""

from __future__ import annotations

from hjepa.errors import HJEPAError


class ExportError(HJEPAError, RuntimeError):
    """An export that cannot be done as asked, or whose output failed verification.

    The message is one line that names what was wrong (level, size, path, missing dependency, error figures) and
    what would work instead. ``hjepa.cli.errors.user_errors`` turns it into ``Error: <message>`` and exit status 1.
    """
