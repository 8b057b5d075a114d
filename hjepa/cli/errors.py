"""Map the library's user-facing errors to one-line messages and a non-zero exit."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import click

from hjepa.errors import HJEPAError

# HJEPAError: every error the project raises for something the user can fix (config, data, level, path, back-end).
# OSError: a missing, unreadable or unwritable path the user named (permissions, a read-only disk, a file where a
# folder should be); its message already names the path. Anything else (a plain KeyError / ValueError from deep
# inside) is a bug, and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (HJEPAError, OSError)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Inside this block, a user mistake becomes ``Error: <message>`` and exit status 1, not a traceback."""
    try:
        yield
    except USER_ERRORS as exc:
        raise click.ClickException(str(exc)) from None
