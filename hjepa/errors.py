"""The base class of the project's own user errors.

Every error a user can act on (a bad path, level, config key, shape, a missing back-end) derives from
:class:`HJEPAError`; the CLI prints those as one line and exits 1. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class HJEPAError(Exception):
    """A problem the user can fix; its message says what was wrong and what would work instead."""


class OptionError(HJEPAError, ValueError):
    """An option or argument that names nothing that works: a level the model does not have, an unknown protocol,
    back-end or baseline, a count that must be positive. The message lists what would work."""


def one_line(message: str, limit: int = 400) -> str:
    """Collapse a message to one line and cut it at ``limit`` characters: messages quote values from user files,
    which may be huge (a list of 10,000 items) or span lines."""
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ConfigError(HJEPAError, ValueError):
    """A user-facing configuration problem; the message names the offending key or file (also importable as
    ``hjepa.config.ConfigError``).

    Always one line of bounded length: a message may quote a value from a hostile file (see ``one_line``).
    """

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


@contextlib.contextmanager
def stage(name: str, error: type[HJEPAError]) -> Iterator[None]:
    """Inside this block, a failure raised by a library below (protobuf, onnx, onnxruntime, torch) becomes one
    line of ``error`` naming the stage and the cause; the project's own errors pass through unchanged."""
    try:
        yield
    except HJEPAError:
        raise
    except MemoryError:
        raise error(f"{name}: out of memory; close other programs or use a machine with more RAM") from None
    except Exception as exc:  # whatever a dependency raises, the user gets the stage and the cause
        raise error(one_line(f"{name} failed: {type(exc).__name__}: {exc}")) from exc
