"""What an export records about itself: ONNX ``metadata_props`` and ``OUT/manifest.json``.

The schema (the metadata keys, their values, the manifest's name) is defined once, in
:mod:`hjepa.inference.artifacts.metadata`, next to the reader every runtime uses; this module writes it.
``provenance`` (source, its sha256 and format, encoder, epoch, licence) travels in every level's metadata and in
the manifest: an imported encoder's licence goes with every file made from it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import onnx

import hjepa
from hjepa.config import Config
from hjepa.files import atomic_write_text
from hjepa.inference.artifacts.metadata import (  # noqa: F401  (the schema lives with its reader; re-exported for export)
    INPUT_FORMATS,
    MANIFEST_NAME,
    METADATA_KEYS,
    PRECISIONS,
    PROVENANCE_KEYS,
    encode_metadata,
    level_metadata,
)


def read_metadata(model: onnx.ModelProto | str | Path) -> dict[str, Any]:
    """The decoded hjepa metadata of an ONNX model (object or path); keys that are not hjepa's are ignored."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    return {key: json.loads(props[key]) for key in METADATA_KEYS if key in props}


def build_manifest(
    checkpoint: Path, checkpoint_sha256: str, cfg: Config, levels: dict[int, dict], files: Sequence[str] = ()
) -> dict[str, Any]:
    """The ``manifest.json`` document: source checkpoint, resolved config, one entry per level, and ``files``: every
    file of the export as a relative POSIX path (``manifest.json`` included). A re-export replaces only those."""
    return {
        "hjepa_version": hjepa.__version__,
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": checkpoint_sha256,
        "config": cfg.to_dict(),
        "levels": {str(level): entry for level, entry in sorted(levels.items())},
        "files": sorted({*files, MANIFEST_NAME}),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def write_json(data: dict[str, Any], path: Path) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    return atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def manifest_dict(out_dir: str | Path) -> dict[str, Any]:
    """``OUT/manifest.json`` as written; :func:`hjepa.inference.artifacts.metadata.read_manifest` parses it."""
    path = Path(out_dir) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: {out_dir} is not an hjepa export directory")
    return json.loads(path.read_text())
