"""What an export records about itself: ONNX ``metadata_props`` and ``OUT/manifest.json``.

Every metadata value is a JSON string, so a reader decodes each with ``json.loads`` and gets back numbers, lists and
strings without guessing. Keys (shared with ``hjepa.serve``): ``hjepa_version``, ``level``, ``num_levels``,
``img_size``, ``patch_size``, ``grid`` ([h, w] of level k), ``embed_dim`` (D of the outputs), ``mean``, ``std``,
``input_format`` ("float_nchw" | "uint8_nhwc"), ``checkpoint_sha256``, ``dataset``, ``precision``
("fp32" | "fp16" | "int8").
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
from hjepa.export.files import atomic_write

METADATA_KEYS = (
    "hjepa_version", "level", "num_levels", "img_size", "patch_size", "grid", "embed_dim", "mean", "std",
    "input_format", "checkpoint_sha256", "dataset", "precision",
)
INPUT_FORMATS = ("float_nchw", "uint8_nhwc")
PRECISIONS = ("fp32", "fp16", "int8")
MANIFEST_NAME = "manifest.json"


def level_metadata(
    cfg: Config,
    level: int,
    img_size: int,
    grid: tuple[int, int],
    embed_dim: int,
    mean: Sequence[float],
    std: Sequence[float],
    input_format: str,
    checkpoint_sha256: str,
    precision: str,
) -> dict[str, Any]:
    """The metadata of one exported level as plain Python values (see the module docstring for the keys)."""
    if input_format not in INPUT_FORMATS or precision not in PRECISIONS:
        raise ValueError(f"bad input_format {input_format!r} or precision {precision!r}")
    return {
        "hjepa_version": hjepa.__version__,
        "level": int(level),
        "num_levels": int(cfg.model.num_levels),
        "img_size": int(img_size),
        "patch_size": int(cfg.model.patch_size),
        "grid": [int(grid[0]), int(grid[1])],
        "embed_dim": int(embed_dim),
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "input_format": input_format,
        "checkpoint_sha256": checkpoint_sha256,
        "dataset": cfg.data.dataset,
        "precision": precision,
    }


def encode_metadata(metadata: dict[str, Any]) -> dict[str, str]:
    """Each value as a JSON string, in ``METADATA_KEYS`` order."""
    return {key: json.dumps(metadata[key]) for key in METADATA_KEYS}


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
    return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n"))


def read_manifest(out_dir: str | Path) -> dict[str, Any]:
    """``OUT/manifest.json`` of an export directory."""
    path = Path(out_dir) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: {out_dir} is not an hjepa export directory")
    return json.loads(path.read_text())
