"""The exported-model schema, defined once, and :class:`RuntimeMetadata` read back from it (docs/internals.md)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hjepa
from hjepa.config import Config
from hjepa.errors import HJEPAError

METADATA_KEYS = (
    "hjepa_version", "level", "num_levels", "img_size", "patch_size", "grid", "embed_dim", "mean", "std",
    "input_format", "checkpoint_sha256", "dataset", "precision", "provenance",
)
PROVENANCE_KEYS = ("source", "source_sha256", "source_format", "model_name", "url", "encoder", "epoch", "licence")
INPUT_FORMATS = ("float_nchw", "uint8_nhwc")
PRECISIONS = ("fp32", "fp16", "int8")
MANIFEST_NAME = "manifest.json"

# older exports may lack the rest
REQUIRED_KEYS = ("level", "num_levels", "img_size", "patch_size", "grid", "embed_dim", "mean", "std")
# every level of one export must agree on these
SHARED_KEYS = ("num_levels", "img_size", "patch_size", "mean", "std", "input_format", "dataset", "checkpoint_sha256")


class RuntimeUnavailableError(HJEPAError, RuntimeError):
    """The back-end a source needs cannot run here."""


class RuntimeSourceError(HJEPAError, ValueError):
    """Not a checkpoint, ONNX model, export or engine, or broken metadata."""


def level_metadata(
    cfg: Config,
    level: int,
    img_size: int,
    grid: tuple[int, int],
    embed_dim: int,
    stats: tuple[Sequence[float], Sequence[float]],
    input_format: str,
    checkpoint_sha256: str,
    precision: str,
    provenance: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One exported level's metadata as plain values; ``stats`` is ``(mean, std)``."""
    mean, std = stats
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
        "provenance": {key: (provenance or {}).get(key) for key in PROVENANCE_KEYS},
    }


def encode_metadata(metadata: dict[str, Any]) -> dict[str, str]:
    """Each value as a JSON string, in ``METADATA_KEYS`` order."""
    return {key: json.dumps(metadata[key]) for key in METADATA_KEYS}


@dataclass(frozen=True)
class RuntimeMetadata:
    """A served model, read from the artifact, never guessed; ``grids[k] = (h_k, w_k)`` per served level.

    ``input_format``: ``float_nchw`` (normalised ``[B, 3, S, S]``) or ``uint8_nhwc`` (normalised inside).
    """

    img_size: int
    patch_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    num_levels: int
    grids: dict[int, tuple[int, int]]
    embed_dims: dict[int, int]
    dataset: str | None = None
    input_format: str = "float_nchw"
    precision: str = "fp32"
    checkpoint_sha256: str | None = None
    hjepa_version: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)  # PROVENANCE_KEYS
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise RuntimeSourceError(f"metadata mean / std must be 3 values with std > 0, got {self.mean} {self.std}")
        if self.input_format not in INPUT_FORMATS:
            raise RuntimeSourceError(f"unknown input_format {self.input_format!r}; expected one of {INPUT_FORMATS}")
        if set(self.grids) != set(self.embed_dims) or not self.grids:
            raise RuntimeSourceError(f"metadata needs a grid and an embed_dim for every level, got {self.grids}")

    def grid(self, level: int) -> tuple[int, int]:
        """``(h, w)`` tokens."""
        return self.grids[level]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: string keys, lists."""
        out = dataclasses.asdict(self)
        out["grids"] = {str(k): list(v) for k, v in self.grids.items()}
        out["embed_dims"] = {str(k): v for k, v in self.embed_dims.items()}
        out["mean"], out["std"] = list(self.mean), list(self.std)
        return out


def decode_props(props: dict[str, Any]) -> dict[str, Any]:
    """ONNX ``metadata_props`` (JSON strings) -> values; non-JSON stays a string."""
    out = {}
    for key, value in props.items():
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
        out[key] = value
    return out


def metadata_from_levels(per_level: dict[int, dict[str, Any]], where: str) -> RuntimeMetadata:
    """Decoded per-level dicts -> one :class:`RuntimeMetadata`; errors name ``where``."""
    if not per_level:
        raise RuntimeSourceError(f"{where} holds no levels")
    for level, meta in per_level.items():
        missing = [key for key in REQUIRED_KEYS if key not in meta]
        if missing:
            raise RuntimeSourceError(
                f"{where}: level {level} metadata lacks {', '.join(missing)}; was it written by hjepa-export?"
            )
        if int(meta["level"]) != level:
            raise RuntimeSourceError(f"{where}: file for level {level} says it holds level {meta['level']}")
    first = per_level[min(per_level)]
    for level, meta in per_level.items():
        for key in SHARED_KEYS:
            if meta.get(key) != first.get(key):
                raise RuntimeSourceError(
                    f"{where}: levels disagree on {key} ({first.get(key)!r} vs {meta.get(key)!r} at level {level})"
                )
    try:
        return RuntimeMetadata(
            img_size=int(first["img_size"]),
            patch_size=int(first["patch_size"]),
            mean=tuple(float(v) for v in first["mean"]),  # type: ignore[arg-type]
            std=tuple(float(v) for v in first["std"]),  # type: ignore[arg-type]
            num_levels=int(first["num_levels"]),
            grids={k: (int(m["grid"][0]), int(m["grid"][1])) for k, m in per_level.items()},
            embed_dims={k: int(m["embed_dim"]) for k, m in per_level.items()},
            dataset=first.get("dataset"),
            input_format=first.get("input_format", "float_nchw"),
            precision=str(first.get("precision", "fp32")),
            checkpoint_sha256=first.get("checkpoint_sha256"),
            hjepa_version=first.get("hjepa_version"),
            provenance={k: v for k, v in (first.get("provenance") or {}).items() if v is not None},
        )
    except (TypeError, ValueError, IndexError, AttributeError) as exc:
        if isinstance(exc, RuntimeSourceError):
            raise
        raise RuntimeSourceError(f"{where}: malformed metadata ({exc})") from None


@dataclass(frozen=True)
class Manifest:
    """``manifest.json``: ``files[k] = {"onnx": path | None, "engine": path | None}``."""

    directory: Path
    config: dict[str, Any] | None
    checkpoint_sha256: str | None
    files: dict[int, dict[str, Path | None]]
    metadata: dict[int, dict[str, Any]]
    all_levels: dict[str, Any] | None = None  # the one-graph levels.onnx entry (--format levels), if written


def read_manifest(directory: Path) -> Manifest:
    """``directory/manifest.json``, or RuntimeSourceError."""
    path = directory / MANIFEST_NAME
    try:
        data = json.loads(path.read_text())
        levels = data["levels"]
        files: dict[int, dict[str, Path | None]] = {}
        metadata: dict[int, dict[str, Any]] = {}
        for key, entry in levels.items():
            level = int(key)
            files[level] = {kind: directory / entry[kind] if entry.get(kind) else None for kind in ("onnx", "engine")}
            metadata[level] = decode_props(entry.get("metadata") or {})
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise RuntimeSourceError(f"{path} is not a valid hjepa export manifest ({type(exc).__name__}: {exc})") from None
    if not files:
        raise RuntimeSourceError(f"{path} lists no levels")
    all_levels = data.get("all_levels") if isinstance(data.get("all_levels"), dict) else None
    return Manifest(directory, data.get("config"), data.get("checkpoint_sha256"), files, metadata, all_levels)
