"""Atomic file writes (temporary file, fsync, rename) and the cleanup of temporaries a killed writer left behind.

A rename within one folder is atomic, so a reader sees the old file or the new one, never half of either: a run
killed while writing a checkpoint, the metrics log or its config keeps the previous version. SIGKILL gives the writer
no chance to delete its temporary file, so each start removes the ones named for the files it writes.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any


def temp_prefix(name: str) -> str:
    """Temporaries of ``name`` are ``.{name}.XXXXXXXX.tmp``: hidden, and findable by :func:`remove_stale_temp_files`."""
    return f".{name}."


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Write ``path`` through a temporary file in the same folder, fsync it, then rename it over ``path``; on any
    exception (Ctrl-C and SIGTERM included) the temporary file is removed and ``path`` is left as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path.name), suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as handle:
            # mkstemp makes the file 0600; give it the mode a plain open() would (0666 minus the umask), or
            # checkpoints are unreadable to evaluation and serving jobs running under another account.
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(handle.fileno(), 0o666 & ~umask)
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_open(path, "w") as handle:
        handle.write(text)


def remove_stale_temp_files(folder: Path, names: Iterable[str]) -> list[Path]:
    """Delete the temporaries of :func:`atomic_open` for each of ``names`` (file names, glob patterns allowed) in
    ``folder``; returns what was removed. Only call this where no other process writes those files."""
    removed = []
    if not folder.is_dir():
        return removed
    for name in names:
        for stale in folder.glob(f"{temp_prefix(name)}*.tmp"):
            if stale.is_file():
                stale.unlink(missing_ok=True)
                removed.append(stale)
    return removed
