"""An output directory that appears complete or not at all.

Everything is written into a hidden sibling ``.NAME.partial-XXXX`` in the same parent folder (same file system, so
the final ``rename`` is atomic), and renamed to ``NAME`` only when the whole export has been verified. On any error
the partial folder, and any parent folders this export created, are removed. An existing export in ``NAME`` (a
folder with ``manifest.json`` and only the files an export writes) is replaced; any other non-empty folder is
refused rather than overwritten.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType

from hjepa.export.errors import ExportError
from hjepa.export.files import file_mode
from hjepa.export.manifest import MANIFEST_NAME

# What an export writes at its top level (api.py, triton.py, tensorrt_build.py): only these may be replaced.
EXPORT_FILES = (MANIFEST_NAME, "level*.onnx", "level*.onnx.data", "level*.engine", "level*.engine.json",
                "tensorrt.timing.cache", "triton", "encoder.json", "encoder.safetensors")


def _export_file(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in EXPORT_FILES)


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


class StagedDirectory:
    """``with StagedDirectory(out) as stage: ... write into stage.path ...; stage.commit()``."""

    def __init__(self, target: str | Path) -> None:
        self.target = Path(target).absolute()
        self.path: Path | None = None
        self._created: list[Path] = []
        self._committed = False

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
        # The previous export is replaced as a whole: anything else in the folder (notes, the checkpoint itself)
        # would be deleted with it, so it stops the export instead.
        foreign = sorted(p.name for p in target.iterdir() if not _export_file(p.name)) if target.is_dir() else []
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise ExportError(
                f"output directory {target} holds files that are not part of its hjepa export ({shown}); a new "
                "export replaces the folder as a whole, so move them elsewhere or choose another --out"
            )

    def __enter__(self) -> StagedDirectory:
        self.check()
        parent = self.target.parent
        missing = [p for p in [parent, *parent.parents] if not p.exists()]
        try:
            parent.mkdir(parents=True, exist_ok=True)
            self._created = missing  # deepest first, the order to remove them in
            self.path = Path(tempfile.mkdtemp(dir=parent, prefix=f".{self.target.name}.partial-"))
            self.path.chmod(file_mode(directory=True))
        except OSError as exc:
            self._remove_created()
            raise ExportError(f"cannot write the export to {self.target}: {_reason(exc)} ({parent})") from None
        return self

    def previous(self, name: str) -> Path | None:
        """A file of the export being replaced (e.g. a timing cache worth reusing), if there is one."""
        candidate = self.target / name
        return candidate if self.target.is_dir() and candidate.is_file() else None

    def commit(self) -> Path:
        """Move the finished folder into place, replacing a previous export; returns the final path."""
        assert self.path is not None, "commit() outside the with block"
        backup = None
        try:
            if self.target.exists():
                backup = Path(tempfile.mkdtemp(dir=self.target.parent, prefix=f".{self.target.name}.old-"))
                os.replace(self.target, backup / "previous")
            os.replace(self.path, self.target)
        except OSError as exc:
            if backup is not None and (backup / "previous").exists() and not self.target.exists():
                os.replace(backup / "previous", self.target)  # put the old export back
            raise ExportError(f"cannot move the export into {self.target}: {_reason(exc)}") from None
        finally:
            if backup is not None:
                shutil.rmtree(backup, ignore_errors=True)
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
        if not self._committed:
            self._remove_created()
