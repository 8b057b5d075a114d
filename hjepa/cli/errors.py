"""Map the library's user-facing errors to one-line messages and a non-zero exit."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import click

from hjepa.errors import HJEPAError

# HJEPAError: the user can fix it. OSError: a path they named (the message names it).
# Anything else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (HJEPAError, OSError)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Inside this block, a user mistake becomes ``Error: <message>`` and exit status 1, not a traceback."""
    try:
        yield
    except USER_ERRORS as exc:
        raise click.ClickException(str(exc)) from None
