"""Atomic file writes with ordinary permissions, used for every file an export produces."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def file_mode(directory: bool = False) -> int:
    """The mode a plain ``open`` / ``mkdir`` would give under the current umask.

    ``mkstemp`` / ``mkdtemp`` create 0600 / 0700, which would leave an export unreadable to the (often different)
    user of the server that deploys it.
    """
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it to ``path`` (readers never see half
    a file; on error the temporary file is removed)."""
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
