"""``export`` / ``export_level``: checkpoint -> verified per-level ONNX (and TensorRT, Triton) in one directory.

Order of work, so that a user's mistake costs nothing: options, level syntax, checkpoint, level range, image size,
opset and optional dependencies (TensorRT + GPU, onnxslim) are all checked before anything is traced or written.
Then every level is traced, verified against PyTorch, optionally quantized / built into an engine, and the
directory appears (with ``manifest.json``) only after every level passed (``StagedDirectory``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from hjepa.config import Config
from hjepa.config_checks import check_model_size
from hjepa.errors import stage
from hjepa.export.errors import ExportError
from hjepa.export.formats import ExportFormat, ExportOptions, LevelJob, format_names, resolve_formats
from hjepa.export.manifest import MANIFEST_NAME, build_manifest, write_json
from hjepa.export.onnx_export import check_opset
from hjepa.export.source import ExportSource
from hjepa.export.staging import StagedDirectory
from hjepa.inference.artifacts.artifact import is_artifact
from hjepa.inference.artifacts.checkpoint import checkpoint_file
from hjepa.inference.artifacts.levels import check_level, level_syntax, parse_levels
from hjepa.logs import Log, silent
from hjepa.models import level_encoder
from hjepa.models.level_encoder import LevelEncoder

FORMATS = tuple(format_names())
# A level's manifest entry, in this order; a format that does not run leaves its keys None.
ENTRY_KEYS = ("onnx", "engine", "engine_metadata", "triton", "metadata", "verification", "int8_knn", "exporter",
              "opset", "dynamic_batch", "batch", "profile_batches", "simplified", "fused_attention",
              "patch_embed_matmul", "onnx_bytes")


def check_img_size(img_size: int, patch_size: int, level: int) -> None:
    """Raise ``ExportError`` unless ``img_size`` gives whole level-k cells."""
    factor = patch_size * 2**level
    if img_size <= 0 or img_size % factor:
        raise ExportError(
            f"image size {img_size} is not usable for level {level}: it must be a positive multiple of "
            f"patch_size * 2^{level} = {factor} (e.g. {max(factor, img_size // factor * factor)})"
        )


def checked_level_encoder(
    model: torch.nn.Module,
    level: int,
    mean: Sequence[float],
    std: Sequence[float],
    img_size: int | None = None,
    uint8_input: bool = False,
    half: bool = False,
) -> LevelEncoder:
    """:func:`hjepa.models.level_encoder.build_level_encoder` with the level and image size checked first
    (``LevelError`` / ``ExportError`` naming what would work)."""
    check_level(level, range(model.num_levels), "this checkpoint")
    check_img_size(img_size or model.config.model.img_size, model.config.model.patch_size, level)
    return level_encoder.build_level_encoder(model, level, mean, std, img_size, uint8_input, half)


def default_out_dir(checkpoint: Path, cfg: Config) -> Path:
    """``exports/<run name>``: the run folder of ``runs/NAME/checkpoints/x.pt``, else the config's run name."""
    if checkpoint.parent.name == "checkpoints":
        return Path("exports") / checkpoint.parent.parent.name
    return Path("exports") / (Path(cfg.train.out_dir).name or cfg.name)


def export(
    checkpoint: str | Path,
    levels: int | str = "all",
    out_dir: str | Path | None = None,
    options: ExportOptions | None = None,
    log: Log | None = None,
) -> dict[str, Any]:
    """Export ``levels`` (an index, a list, ``"0,2"`` or ``"all"``) of a checkpoint into ``out_dir``; returns the
    manifest dict.

    Writes ``level{K}.onnx`` per level (``level{K}.engine`` + ``.engine.json`` for trt, ``triton/`` for triton)
    and ``manifest.json``. Raises ``ExportError`` / ``LevelError`` / ``CheckpointError`` with nothing left on disk.
    """
    options = options or ExportOptions()
    options.validate()
    formats = resolve_formats(options.formats)
    log = log or silent
    level_syntax(levels)  # a typo fails before the checkpoint is read
    path = Path(checkpoint) if is_artifact(checkpoint) else checkpoint_file(checkpoint)
    source = ExportSource(path)  # no local reference to its model: a large level drops it (ExportSource.release)
    cfg = source.config
    targets = parse_levels(levels, range(source.model.num_levels), path.name)
    img_size = options.img_size or cfg.model.img_size
    check_model_size(cfg.model, img_size)  # before a 100000 px size allocates its 40 GB position table
    for level in sorted(targets, reverse=True):  # the deepest level has the strictest size rule: report that one
        check_img_size(img_size, cfg.model.patch_size, level)
    check_opset(options.opset or cfg.export.opset)
    if options.simplify:
        _require_onnxslim()
    resources = {fmt.name: fmt.prepare(options) for fmt in formats}  # a missing back-end stops here
    sha = source.spec["provenance"]["source_sha256"]  # the training checkpoint's, also through an artifact
    onnx_levels = targets if any(fmt.per_level for fmt in formats) else []  # --format hjepa alone: no ONNX
    with StagedDirectory(out_dir or default_out_dir(path, cfg)) as staged:
        for fmt in formats:
            fmt.start(staged, resources[fmt.name])
        entries = {}
        for level in onnx_levels:  # mean / std travel with the model, never looked up by dataset name
            job = LevelJob(source=source, cfg=cfg, level=level, out=staged.path, options=options, img_size=img_size,
                           mean=source.mean, std=source.std, sha=sha, resources=resources,
                           provenance=source.spec["provenance"], entry=dict.fromkeys(ENTRY_KEYS))
            entries[level] = _export_level(formats, job, log)
        manifest = build_manifest(path.absolute(), sha, cfg, entries)
        manifest["provenance"] = source.spec["provenance"]  # source, licence: an imported encoder's travel on
        for fmt in formats:
            if not fmt.per_level:
                with stage(f"{fmt.name} export", ExportError):
                    fmt.export_model(source.loaded, staged.path, manifest, log)
        # Every file this export wrote (the non-level formats' too), so a later re-export replaces only its own.
        manifest["files"] = sorted({*staged.files(), *manifest.get("files", []), MANIFEST_NAME})
        write_json(manifest, staged.path / MANIFEST_NAME)
        final = staged.commit()
    log(f"export written to {final}")
    return manifest


def export_level(
    checkpoint: str | Path, level: int, out_dir: str | Path, fmt: str = "onnx", log: Log | None = None, **options: Any
) -> dict[str, Any]:
    """Export one level in format ``fmt`` ("onnx" | "trt" | "triton"); returns that level's manifest entry.

    ``options`` are ``ExportOptions`` fields (``half``, ``int8``, ``batch``, ``dynamic``, ...).
    """
    manifest = export(checkpoint, level, out_dir, ExportOptions(formats=(fmt,), **options), log)
    return manifest["levels"][str(level_syntax(level)[0])]


def _require_onnxslim() -> None:
    try:
        import onnxslim  # noqa: F401
    except ImportError:
        raise ExportError("--simplify needs onnxslim, which is not installed: pip install onnxslim") from None


def _export_level(formats: list[ExportFormat], job: LevelJob, log: Log) -> dict[str, Any]:
    """Run every per-level format on ``job`` inside the staging folder; returns its manifest entry."""
    for fmt in formats:
        if fmt.per_level:
            with stage(f"level {job.level}: {fmt.name} export", ExportError):
                fmt.export_level(job)
    log(job.summary())
    return job.entry


