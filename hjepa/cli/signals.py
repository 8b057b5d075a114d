"""SIGTERM handled like Ctrl-C: one line and exit status 128 + signal, not a silent death under a scheduler.

Unwinding as ``KeyboardInterrupt`` lets atomic writes delete their temporary files.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

import click


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived; unwinds like Ctrl-C."""

    signum = signal.SIGTERM


class StoppedBySignal(click.ClickException):
    """Exit status 128 + signal, as a shell reports a killed command."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


@contextlib.contextmanager
def stop_cleanly(what_is_kept: Callable[[], str]) -> Iterator[None]:
    """SIGTERM or Ctrl-C ends with ``Error: stopped by SIGTERM; <what_is_kept()>``, asked then."""
    install = threading.current_thread() is threading.main_thread()  # handlers live in the main thread
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if install else None
    try:
        yield
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, Terminated) else signal.SIGINT
        raise StoppedBySignal(f"stopped by {signal.Signals(signum).name}; {what_is_kept()}", signum) from None
    finally:
        if install:
            signal.signal(signal.SIGTERM, previous)
