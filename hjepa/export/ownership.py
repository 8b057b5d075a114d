"""Which paths in an output folder belong to the hjepa export there: exactly the files its ``manifest.json`` lists.

A re-export replaces the folder as a whole, so everything else in it (a backup named ``levels_backup.onnx``, a
hand-made Triton model ``triton/prod_model/``, a version added inside one of the export's own Triton models) would
be deleted with it. Name patterns cannot tell those apart from the export's files; the manifest's list can.
Manifests written before the list existed own what their level entries name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from hjepa.export.errors import ExportError
from hjepa.export.manifest import MANIFEST_NAME

# Files a Triton model folder of an older export held (triton.py: config.pbtxt, 1/model.onnx or 1/model.plan and,
# above 2 GB, 1/model.onnx.data), and the TensorRT timing cache an export with engines kept at the top level.
_LEGACY_TRITON_FILES = ("config.pbtxt", "1/model.onnx", "1/model.plan", "1/model.onnx.data")
_LEGACY_TIMING_CACHE = "tensorrt.timing.cache"


def export_files(folder: Path) -> list[str]:
    """Every file and link under ``folder`` as sorted relative POSIX paths: the list a manifest records."""
    found = []
    for root, dirs, files in os.walk(folder):
        here = Path(root).relative_to(folder)
        found += [(here / name).as_posix() for name in files]
        found += [(here / name).as_posix() for name in dirs if os.path.islink(os.path.join(root, name))]
    return sorted(found)


def listed_files(manifest: dict[str, Any]) -> set[str]:
    """The relative paths an export's manifest owns (``manifest.json`` itself included)."""
    files = manifest.get("files")
    if isinstance(files, list) and all(isinstance(name, str) for name in files):
        return {MANIFEST_NAME, *files}
    owned = {MANIFEST_NAME}
    levels = manifest.get("levels")
    for entry in levels.values() if isinstance(levels, dict) else []:
        if not isinstance(entry, dict):
            continue
        if isinstance(entry.get("onnx"), str):
            owned |= {entry["onnx"], f"{entry['onnx']}.data"}
        if isinstance(entry.get("engine"), str):
            owned |= {entry["engine"], f"{entry['engine']}.json", _LEGACY_TIMING_CACHE}
        if isinstance(entry.get("triton"), str):
            owned |= {f"{entry['triton']}/{name}" for name in _LEGACY_TRITON_FILES}
    artifact = manifest.get("artifact")
    if isinstance(artifact, dict):
        owned |= {artifact[key] for key in ("spec", "weights") if isinstance(artifact.get(key), str)}
    return owned


def foreign_paths(folder: Path) -> list[str]:
    """Paths under ``folder`` (an export with ``manifest.json``) that its manifest does not list: files, links, and
    empty folders (shown with a trailing ``/``). An unreadable manifest raises ``ExportError``."""
    path = folder / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text())
        if not isinstance(manifest, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        raise ExportError(
            f"{path} is not a readable hjepa export manifest ({type(exc).__name__}), so nothing in {folder} can be "
            "told apart from the export; choose another --out"
        ) from None
    owned = listed_files(manifest)
    foreign = [name for name in export_files(folder) if name not in owned]
    for root, dirs, files in os.walk(folder):
        if not dirs and not files and Path(root) != folder:
            foreign.append(Path(root).relative_to(folder).as_posix() + "/")
    return sorted(foreign)
