"""``manifest.json``: what a job is and, once finished, what it made; written first so a later run can tell the
same job (resume) from another (refuse to mix).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from hjepa import __version__
from hjepa.errors import HJEPAError
from hjepa.files import atomic_write_text
from hjepa.inference.features.collection import FORMAT, MANIFEST_NAME, read_manifest

# must match for --resume: they change which rows exist or their values
JOB_KEYS = ("source_hash", "input", "levels", "grid", "shard_size", "preprocessing")


class OutputError(HJEPAError, ValueError):
    """``--out`` holds something this run must not write over."""


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    atomic_write_text(directory / MANIFEST_NAME, json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def new_manifest(job: dict[str, Any], model: dict[str, Any]) -> dict[str, Any]:
    return {"format": FORMAT, "hjepa_version": __version__, "status": "running", "job": job, "model": model}


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return [key for key in JOB_KEYS if old.get(key) != new.get(key)]


def prepare_output(directory: Path, job: dict[str, Any], resume: bool, overwrite: bool) -> dict[str, Any] | None:
    """Checks ``--out`` before any write; the previous manifest when resuming, else None.

    A folder holding anything but a job's files is never touched.
    """
    if resume and overwrite:
        raise OutputError("--resume and --overwrite contradict each other; pick one")
    if directory.exists() and not directory.is_dir():
        raise OutputError(f"--out {directory} is a file; give a folder")
    entries = [p for p in directory.iterdir()] if directory.is_dir() else []
    if not entries:
        if resume:
            raise OutputError(f"--resume: {directory} holds no previous job to resume")
        directory.mkdir(parents=True, exist_ok=True)
        return None
    if not (directory / MANIFEST_NAME).is_file():
        raise OutputError(f"--out {directory} is not empty and holds no hjepa-embed manifest; choose an empty folder")
    previous = read_manifest(directory)
    if overwrite:
        _clear(directory)
        return None
    changed = differences(previous.get("job", {}), job)
    if not resume:
        state = "a finished" if previous.get("status") == "complete" else "an unfinished"
        hint = "--resume to continue it" if not changed else f"another job (differs in {', '.join(changed)})"
        raise OutputError(f"--out {directory} holds {state} embed job; pass --overwrite to replace it"
                          + (f" or {hint}" if not changed else f"; it is {hint}"))
    if changed:
        raise OutputError(f"--resume: {directory} holds another job (it differs in {', '.join(changed)}); "
                          "use the same SOURCE, INPUT, --level, --grid and --shard-size, or another --out")
    return previous


def _clear(directory: Path) -> None:
    """Removes a previous job's files, only the names hjepa-embed writes."""
    for pattern in ("part-*.parquet", ".part-*", "ray-*", ".ray-*", "index", ".index*", "errors.jsonl",
                    ".errors.jsonl*", "inputs.parquet", ".inputs.parquet*", MANIFEST_NAME):
        for path in directory.glob(pattern):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
