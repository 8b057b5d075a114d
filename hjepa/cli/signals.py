"""SIGTERM handled like Ctrl-C: the command stops with one line and exit status 128 + the signal's number.

Schedulers (Slurm, Kubernetes, systemd, ``timeout``) stop jobs with SIGTERM, whose default action ends the process
silently with nothing said about what was kept. Raised as ``KeyboardInterrupt``, it unwinds like Ctrl-C: atomic
writes in progress delete their temporary file and the last complete file stays.
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
    """One line on stderr and exit status 128 + the signal's number, as a shell reports a killed command."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


@contextlib.contextmanager
def stop_cleanly(what_is_kept: Callable[[], str]) -> Iterator[None]:
    """Inside this block SIGTERM raises :class:`Terminated`; it or Ctrl-C ends the command with
    ``Error: stopped by SIGTERM; <what_is_kept()>`` (asked then, as it depends on how far the command got). The
    previous SIGTERM handler is restored on the way out."""
    install = threading.current_thread() is threading.main_thread()  # signal handlers live in the main thread
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if install else None
    try:
        yield
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, Terminated) else signal.SIGINT
        raise StoppedBySignal(f"stopped by {signal.Signals(signum).name}; {what_is_kept()}", signum) from None
    finally:
        if install:
            signal.signal(signal.SIGTERM, previous)
