"""An output directory that appears complete or not at all.

Everything is written into a hidden sibling ``.NAME.partial-XXXX`` in the same parent folder (same file system, so
the final ``rename`` is atomic), and renamed to ``NAME`` only when the whole export has been verified. On any error,
Ctrl-C or SIGTERM the partial folder, and any parent folders this export created, are removed. An existing export
in ``NAME`` (a folder with ``manifest.json`` holding only the files that manifest lists) is replaced; any other
non-empty folder is refused rather than overwritten.

A SIGKILL (or a power cut) leaves the staging folder behind. Each one holds a lock file that its export keeps
locked (``flock``) while it runs; the kernel drops the lock when the process dies however it dies, so the next
export into ``NAME`` removes every sibling staging folder whose lock nobody holds, and leaves running exports alone.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from hjepa.export.errors import ExportError
from hjepa.export.manifest import MANIFEST_NAME
from hjepa.export.ownership import export_files, foreign_paths
from hjepa.files import LOCK_NAME, commit_directory, hold_lock, move, new_stage

# A staging folder without a lock file was made by an hjepa older than the locks (or is a split second old):
# it counts as abandoned once nothing has changed in it for this long.
UNLOCKED_STALE_AFTER_S = 600.0


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


class StagedDirectory:
    """``with StagedDirectory(out) as stage: ... write into stage.path ...; stage.commit()``."""

    def __init__(self, target: str | Path) -> None:
        self.target = Path(target).absolute()
        self.path: Path | None = None
        self._created: list[Path] = []
        self._committed = False
        self._lock: int | None = None
        self._previous_sigterm: Any = None

    def check(self) -> None:
        """Refuse targets that are files or non-empty folders that are not hjepa exports."""
        target = self.target
        if target.exists() and not target.is_dir():
            raise ExportError(f"output {target} exists and is not a directory; choose another --out")
        blocking = next((p for p in target.parents if p.exists() and not p.is_dir()), None)
        if blocking is not None:
            raise ExportError(f"cannot write the export to {target}: {blocking} is a file, not a directory")
        if target.is_dir() and any(target.iterdir()) and not (target / MANIFEST_NAME).is_file():
            raise ExportError(
                f"output directory {target} is not empty and holds no hjepa export (no {MANIFEST_NAME}); "
                "choose a new or empty directory with --out"
            )
        # The previous export is replaced as a whole: anything its manifest does not list (notes, the checkpoint,
        # a backup called levels_backup.onnx, a hand-made triton/prod_model/) would be deleted with it, so it stops
        # the export instead.
        foreign = foreign_paths(target) if target.is_dir() and any(target.iterdir()) else []
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise ExportError(
                f"output directory {target} holds files that its previous export's {MANIFEST_NAME} does not list "
                f"({shown}); a new export replaces the folder as a whole, so move them elsewhere or choose another "
                "--out"
            )

    def _siblings(self) -> list[Path]:
        """Staging and backup folders of exports into this target (running, finished or killed)."""
        parent, name = self.target.parent, self.target.name
        if not parent.is_dir():
            return []
        prefixes = (f".{name}.partial-", f".{name}.old-")
        return sorted(p for p in parent.iterdir() if p.name.startswith(prefixes) and p.is_dir() and not p.is_symlink())

    def remove_stale(self) -> list[Path]:
        """Remove the staging and backup folders that killed exports into this target left; returns them.

        A backup whose export was killed between moving the old export aside and moving the new one in is put back
        first, so a kill never loses the previous export.
        """
        removed = []
        for folder in self._siblings():
            lock = _try_lock(folder / LOCK_NAME)
            if lock is None:  # a running export holds it, or the folder is too young to judge
                continue
            try:
                previous = folder / "previous"
                backup = folder.name.startswith(f".{self.target.name}.old-")
                if backup and previous.is_dir() and not self.target.exists():
                    move(previous, self.target)
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
            except OSError:
                continue
            finally:
                if lock != _UNLOCKED:
                    os.close(lock)
        return removed

    def __enter__(self) -> StagedDirectory:
        self.remove_stale()  # first: it may put a previous export back, which check() must then see
        self.check()
        parent = self.target.parent
        missing = [p for p in [parent, *parent.parents] if not p.exists()]
        try:
            parent.mkdir(parents=True, exist_ok=True)
            self._created = missing  # deepest first, the order to remove them in
            self.path = new_stage(self.target)
            self._lock = hold_lock(self.path / LOCK_NAME)
        except OSError as exc:
            self._remove_created()
            raise ExportError(f"cannot write the export to {self.target}: {_reason(exc)} ({parent})") from None
        self._handle_sigterm()
        return self

    def _handle_sigterm(self) -> None:
        """Make SIGTERM (``kill``, a container stop, a job scheduler) unwind like Ctrl-C, so ``__exit__`` removes the
        staging folder; its default action ends the process on the spot and leaves the folder behind. Only from the
        main thread (the only one Python lets set handlers) and only over the default action, never over a handler
        the application installed."""
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return

        def interrupt(signum: int, frame: FrameType | None) -> None:
            raise KeyboardInterrupt(f"export stopped by {signal.Signals(signum).name}")

        self._previous_sigterm = signal.signal(signal.SIGTERM, interrupt)

    def files(self) -> list[str]:
        """The files written so far, as relative POSIX paths (what ``manifest.json`` lists), less the lock file."""
        assert self.path is not None, "files() outside the with block"
        return [name for name in export_files(self.path) if name != LOCK_NAME]

    def previous(self, name: str) -> Path | None:
        """A file of the export being replaced (e.g. a timing cache worth reusing), if there is one."""
        candidate = self.target / name
        return candidate if self.target.is_dir() and candidate.is_file() else None

    def commit(self) -> Path:
        """Move the finished folder into place, replacing a previous export; returns the final path."""
        assert self.path is not None, "commit() outside the with block"
        try:
            (self.path / LOCK_NAME).unlink()  # not part of the export; the open descriptor keeps the lock held
            commit_directory(self.path, self.target)
        except OSError as exc:
            raise ExportError(f"cannot move the export into {self.target}: {_reason(exc)}") from None
        self._committed = True
        return self.target

    def _remove_created(self) -> None:
        for folder in self._created:
            try:
                folder.rmdir()  # only if still empty: never remove what someone else put there meanwhile
            except FileNotFoundError:
                continue
            except OSError:
                break

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.path is not None and self.path.exists():
            shutil.rmtree(self.path, ignore_errors=True)
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._previous_sigterm = None
        if not self._committed:
            self._remove_created()


_UNLOCKED = -1  # _try_lock's answer for an old folder that has no lock file at all


def _try_lock(path: Path) -> int | None:
    """A descriptor holding the lock of an abandoned folder's ``path``; ``_UNLOCKED`` for an abandoned folder with no
    lock file; None when the folder's export is still running (or may be: a young folder without a lock)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        try:
            idle = time.time() - path.parent.stat().st_mtime
        except OSError:
            return None
        return _UNLOCKED if idle > UNLOCKED_STALE_AFTER_S else None
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd
