"""The base class of the project's own user errors.

Every error a user can act on (a bad path, level, config key, shape, a missing back-end) derives from
:class:`HJEPAError`; the CLI prints those as one line and exits 1. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class HJEPAError(Exception):
    """A problem the user can fix; its message says what was wrong and what would work instead."""
