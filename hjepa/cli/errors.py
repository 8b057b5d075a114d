"""Map the library's user-facing errors to one-line messages and a non-zero exit."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import click

from hjepa.config import ConfigError


def user_error_types() -> tuple[type[BaseException], ...]:
    from hjepa.data import DataError
    from hjepa.device import DeviceUnavailableError
    from hjepa.train.checkpoint import CheckpointError
    from hjepa.train.loop import NonFiniteLossError

    # OSError: a missing, unreadable or unwritable path the user named (permissions, a read-only disk, a file where a
    # folder should be); its message already names the path.
    types: list[type[BaseException]] = [
        ConfigError, DataError, CheckpointError, NonFiniteLossError, DeviceUnavailableError, OSError
    ]
    try:
        from hjepa.export.errors import ExportError

        types.append(ExportError)
    except ImportError:
        pass
    try:
        from hjepa.inference.runtime import RuntimeUnavailableError

        types.append(RuntimeUnavailableError)
    except ImportError:
        pass
    return tuple(types)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Inside this block, a user mistake becomes ``Error: <message>`` and exit status 1, not a traceback."""
    try:
        yield
    except user_error_types() as exc:
        raise click.ClickException(str(exc)) from None
    except KeyError as exc:  # registry lookups: "unknown predictor 'x'; valid names: ..."
        raise click.ClickException(str(exc.args[0]) if exc.args else repr(exc)) from None
    except ValueError as exc:  # model construction: grid not divisible, bad sizes ...
        raise click.ClickException(str(exc)) from None
