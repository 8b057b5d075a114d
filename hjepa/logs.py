"""One logging style: a library function takes ``log: Log | None`` (the CLI passes ``click.echo``) and writes
``log = log or silent``."""

from __future__ import annotations

from collections.abc import Callable

Log = Callable[[str], None]


def silent(message: str) -> None:
    """The default ``log``: a library call prints nothing unless asked to."""
