"""Map the library's user-facing errors to one-line messages and a non-zero exit."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import click

from hjepa.errors import HJEPAError

# the user can fix these; anything else is a bug and keeps its traceback
USER_ERRORS: tuple[type[BaseException], ...] = (HJEPAError, OSError)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """A user mistake becomes ``Error: <message>`` and exit status 1."""
    try:
        yield
    except USER_ERRORS as exc:
        raise click.ClickException(str(exc)) from None
