"""The one way to write a file or a folder: build it under a hidden temporary name beside its target, fsync, rename.

A rename within one folder is atomic, so readers see the old version or the new one, never half of either.
Everything written gets the mode a plain ``open`` / ``mkdir`` would give under the user's umask (``mkstemp`` and
``mkdtemp`` give 0600 / 0700, unreadable to a serving job under another account).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

LOCK_NAME = ".lock"  # held (flock) inside a staging folder while its writer lives
_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (``os.umask`` can only set it)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    with _UMASK_LOCK:  # set-and-restore: other threads must not create files in between
        umask = os.umask(0o077)
        os.umask(umask)
    return umask


def file_mode(directory: bool = False) -> int:
    return (0o777 if directory else 0o666) & ~current_umask()


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_directory(path: Path) -> None:
    """Make a rename inside ``path`` durable; file systems that refuse fsync on folders are skipped."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file and folder under ``root`` (``root`` included), so its rename publishes complete data."""
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder, name)
            if path.is_file() and not path.is_symlink():
                fsync_file(path)
        fsync_directory(Path(folder))


def temp_prefix(name: str) -> str:
    """Temporaries of ``name`` are ``.{name}.XXXXXXXX.tmp``: hidden, and findable by :func:`remove_stale_temp_files`."""
    return f".{name}."


def move(source: Path, target: Path) -> None:
    """Rename ``source`` over ``target`` (same file system) and make the rename durable."""
    os.replace(source, target)
    fsync_directory(Path(target).parent)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for a writer that wants a path (``torch.save``, ``onnx.save``); on
    success it is fsynced, given the umask's mode and renamed to ``path``. On any exception, Ctrl-C included, it is
    removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path.name), suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        fsync_file(tmp)
        os.chmod(tmp, file_mode())
        move(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb", encoding: str | None = None) -> Iterator[IO[Any]]:
    """:func:`atomic_path` as an open file."""
    with atomic_path(path) as tmp, open(tmp, mode, encoding=encoding) as handle:
        yield handle


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_open(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    with atomic_open(path, "w", encoding=encoding) as handle:
        handle.write(text)
    return Path(path)


def remove_stale_temp_files(folder: Path, names: Iterable[str]) -> list[Path]:
    """Delete the temporaries a killed writer left for each of ``names`` (glob patterns allowed) in ``folder``.
    Only call this where no other process writes those files."""
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for name in names:
        for stale in folder.glob(f"{temp_prefix(name)}*.tmp"):
            if stale.is_file():
                stale.unlink(missing_ok=True)
                removed.append(stale)
    return removed


def hold_lock(path: Path) -> int:
    """Create ``path`` and lock it while the returned descriptor stays open; the kernel drops it if we die."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, f"{os.getpid()}\n".encode())
    except OSError:
        os.close(fd)
        raise
    return fd


def new_stage(target: Path, kind: str = "partial") -> Path:
    """An empty folder ``.NAME.{kind}-XXXX`` beside ``target`` (same file system, so its rename is atomic)."""
    path = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.{kind}-"))
    path.chmod(file_mode(directory=True))
    return path


def commit_directory(stage: Path, target: Path) -> None:
    """fsync ``stage`` and rename it to ``target``. An existing ``target`` is moved into a locked
    ``.NAME.old-XXXX`` folder first, put back if the rename fails, and deleted once the new one is in place."""
    fsync_tree(stage)
    backup, backup_lock = None, None
    try:
        if target.exists():
            backup = new_stage(target, "old")
            backup_lock = hold_lock(backup / LOCK_NAME)
            move(target, backup / "previous")
        move(stage, target)
    except OSError:
        if backup is not None and (backup / "previous").exists() and not target.exists():
            move(backup / "previous", target)
        raise
    finally:
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
        if backup_lock is not None:
            os.close(backup_lock)


@contextlib.contextmanager
def staged_directory(target: str | Path) -> Iterator[Path]:
    """Yield an empty staging folder for ``target``; when the block ends it is committed with
    :func:`commit_directory`, and on any exception removed, leaving ``target`` as it was."""
    target = Path(target).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = new_stage(target)
    try:
        yield stage
        commit_directory(stage, target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
