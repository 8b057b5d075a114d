"""``export`` / ``export_level``: checkpoint -> verified per-level ONNX (and TensorRT, Triton) in one directory.

Order of work, so that a user's mistake costs nothing: options, level syntax, checkpoint, level range, image size,
opset and optional dependencies (TensorRT + GPU, onnxslim) are all checked before anything is traced or written.
Then every level is traced, verified against PyTorch, optionally quantized / built into an engine, and the
directory appears (with ``manifest.json``) only after every level passed (``StagedDirectory``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from hjepa.config import Config, check_model_size
from hjepa.export import fuse, quantize, tensorrt_build, triton
from hjepa.export.errors import ExportError
from hjepa.export.level_encoder import build_level_encoder, check_img_size
from hjepa.export.manifest import MANIFEST_NAME, build_manifest, encode_metadata, level_metadata, write_json
from hjepa.export.onnx_export import (
    check_opset,
    external_data_name,
    save_onnx,
    set_metadata,
    simplify,
    trace_onnx,
)
from hjepa.export.staging import StagedDirectory
from hjepa.export.verify import ort_runner, ort_session, sample_inputs, tolerance_for, torch_runner, verify
from hjepa.models.hierarchy import level_grid

FORMATS = ("onnx", "trt", "triton")
TIMING_CACHE = "tensorrt.timing.cache"
Log = Callable[[str], None]


@dataclass
class ExportOptions:
    """How to export. ``formats``: any of onnx / trt / triton (ONNX is always written: the others build on it).

    ``batch``: verification batch (default ``cfg.export.verify_batch``), and the fixed batch of a static export
    (default 1). ``img_size``: default the trained size. ``knn_*``: subset sizes of the int8 k-NN comparison.
    ``fuse``: write each attention block as one onnxruntime ``com.microsoft.Attention`` node (``fuse.py``; fp32 and
    int8 files only, and not when a TensorRT engine is built from the file, since TensorRT cannot parse it).
    """

    formats: tuple[str, ...] = ("onnx",)
    batch: int | None = None
    dynamic: bool = True
    half: bool = False
    int8: bool = False
    opset: int | None = None
    simplify: bool = False
    img_size: int | None = None
    uint8_input: bool = False
    knn_train_samples: int = 5000  # 2,000 test images resolve 0.05 pt, and the target is "within 0.5 pt"
    knn_test_samples: int = 2000
    fuse: bool = True

    @property
    def precision(self) -> str:
        return "int8" if self.int8 else "fp16" if self.half else "fp32"

    def validate(self) -> None:
        unknown = sorted(set(self.formats) - set(FORMATS))
        if unknown:
            raise ExportError(f"unknown format {unknown[0]!r}; valid formats: {', '.join(FORMATS)}")
        if self.half and self.int8:
            raise ExportError("--half and --int8 exclude each other; choose one precision")
        if self.int8 and "trt" in self.formats:
            raise ExportError("--int8 is onnxruntime dynamic quantization, which TensorRT cannot run; use --half for "
                              "TensorRT, or --format onnx --int8")
        if self.batch is not None and self.batch < 1:
            raise ExportError(f"--batch must be at least 1, got {self.batch}")
        if self.img_size is not None and self.img_size < 1:
            raise ExportError(f"--img-size must be positive, got {self.img_size}")
        if self.opset is not None:
            check_opset(self.opset)


def level_syntax(levels: int | str) -> int | None:
    """``"all"`` -> None, an integer (or its text) -> that integer, anything else -> ``ExportError``."""
    if isinstance(levels, int) and not isinstance(levels, bool):
        return levels
    text = str(levels).strip().lower()
    if text == "all":
        return None
    try:
        return int(text)
    except ValueError:
        raise ExportError(f"--level must be a level number or 'all', got {levels!r}") from None


def parse_levels(levels: int | str, num_levels: int) -> list[int]:
    """The level indices to export, checked against the checkpoint's ``num_levels``."""
    level = level_syntax(levels)
    if level is None:
        return list(range(num_levels))
    if not 0 <= level < num_levels:
        raise ExportError(f"level {level} does not exist: this checkpoint has {num_levels} level(s), "
                          f"0..{num_levels - 1} (or use --level all)")
    return [level]


def resolve_checkpoint(checkpoint: str | Path) -> Path:
    """The ``.pt`` file a checkpoint argument names (a file, a run directory or its ``checkpoints/``)."""
    path = Path(checkpoint)
    if path.is_dir():
        path = path / "checkpoints" / "last.pt" if (path / "checkpoints").is_dir() else path / "last.pt"
    return path


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
    """Export ``levels`` (an index or ``"all"``) of a checkpoint into ``out_dir``; returns the manifest dict.

    Writes ``level{K}.onnx`` per level (``level{K}.engine`` + ``.engine.json`` for trt, ``triton/`` for triton)
    and ``manifest.json``. Raises ``ExportError`` / ``CheckpointError`` with nothing left on disk.
    """
    from hjepa.data import dataset_stats
    from hjepa.evaluation.cache import file_sha256
    from hjepa.train.checkpoint import load_model

    options = options or ExportOptions()
    options.validate()
    say = log or (lambda message: None)
    level_syntax(levels)
    path = resolve_checkpoint(checkpoint)
    model, cfg, _ = load_model(path, "cpu")
    targets = parse_levels(levels, model.num_levels)
    img_size = options.img_size or cfg.model.img_size
    check_model_size(cfg.model, img_size)  # before a 100000 px size allocates its 40 GB position table
    for level in sorted(targets, reverse=True):  # the deepest level has the strictest size rule: report that one
        check_img_size(img_size, cfg.model.patch_size, level)
    check_opset(options.opset or cfg.export.opset)
    trt = tensorrt_build.require_tensorrt() if "trt" in options.formats else None
    if options.simplify:
        _require_onnxslim()
    stats = dataset_stats(cfg.data.dataset)
    sha = file_sha256(path)
    with StagedDirectory(out_dir or default_out_dir(path, cfg)) as stage:
        previous_cache = stage.previous(TIMING_CACHE)
        if trt is not None and previous_cache is not None:
            (stage.path / TIMING_CACHE).write_bytes(previous_cache.read_bytes())
        entries = {}
        for level in targets:
            entries[level] = _export_one(model, cfg, level, stage.path, options, img_size, stats, sha, trt, say)
        manifest = build_manifest(path.absolute(), sha, cfg, entries)
        write_json(manifest, stage.path / MANIFEST_NAME)
        final = stage.commit()
    say(f"export written to {final}")
    return manifest


def export_level(
    checkpoint: str | Path, level: int, out_dir: str | Path, fmt: str = "onnx", log: Log | None = None, **options: Any
) -> dict[str, Any]:
    """Export one level in format ``fmt`` ("onnx" | "trt" | "triton"); returns that level's manifest entry.

    ``options`` are ``ExportOptions`` fields (``half``, ``int8``, ``batch``, ``dynamic``, ...).
    """
    manifest = export(checkpoint, level, out_dir, ExportOptions(formats=(fmt,), **options), log)
    return manifest["levels"][str(level_syntax(level))]


def _require_onnxslim() -> None:
    try:
        import onnxslim  # noqa: F401
    except ImportError:
        raise ExportError("--simplify needs onnxslim, which is not installed: pip install onnxslim") from None


def _export_one(
    model: torch.nn.Module,
    cfg: Config,
    level: int,
    out: Path,
    options: ExportOptions,
    img_size: int,
    stats: tuple[tuple[float, ...], tuple[float, ...]],
    sha: str,
    trt: ModuleType | None,
    say: Log,
) -> dict[str, Any]:
    """Trace, verify, quantize / build and lay out one level inside the staging folder ``out``."""
    mean, std = stats
    input_format = "uint8_nhwc" if options.uint8_input else "float_nchw"
    reference = build_level_encoder(model, level, mean, std, img_size, options.uint8_input)
    module = reference
    if options.half:
        module = build_level_encoder(model, level, mean, std, img_size, options.uint8_input, half=True)
    verify_batch = options.batch or cfg.export.verify_batch
    batch = verify_batch if options.dynamic else (options.batch or 1)
    batches = sorted({1, verify_batch}) if options.dynamic else [batch]

    def make_inputs(size: int) -> Any:
        return sample_inputs(size, img_size, input_format, mean, std, seed=level + 1)

    # Step 1. Trace (batch >= 2 keeps the batch axis symbolic), attach metadata, check and save.
    opset = options.opset or cfg.export.opset
    example = torch.from_numpy(make_inputs(max(batch, 2) if options.dynamic else batch))
    onnx_model, exporter = trace_onnx(module, example, opset, options.dynamic)
    # The TorchScript fallback stops at opset 20: record the opset the file has, not the one asked for.
    opset = next((o.version for o in onnx_model.opset_import if o.domain in ("", "ai.onnx")), opset)
    metadata = level_metadata(cfg, level, img_size, level_grid(module.grid, level), model.head_dim, mean, std,
                              input_format, sha, "fp16" if options.half else "fp32")
    set_metadata(onnx_model, encode_metadata(metadata))
    if options.simplify:
        onnx_model = simplify(onnx_model)
    fused = 0
    if options.fuse and not options.half and trt is None:
        onnx_model, fused = fuse.fuse_for_cpu(onnx_model, make_inputs(batch))
    onnx_path = out / f"level{level}.onnx"
    save_onnx(onnx_model, onnx_path)

    # Step 2. onnxruntime vs PyTorch float32.
    what = f"level {level} ONNX ({'fp16' if options.half else 'fp32'})"
    session = ort_session(onnx_path)
    checks = {"onnxruntime": verify(ort_runner(session), torch_runner(reference), make_inputs, batches,
                                    tolerance_for("fp16" if options.half else "fp32", cfg.export), what,
                                    "PyTorch fp32")}

    # Step 3. int8: quantize the verified fp32 file, verify it, measure k-NN, and let it take the file's place.
    knn = None
    if options.int8:
        # In a folder of its own, under the final name: a model over 2 GB records its weights file by name
        # ("level{K}.onnx.data"), so the int8 file and its weights must be written as they will be called.
        int8_dir = out / f".level{level}.int8"
        int8_dir.mkdir()
        int8_path = int8_dir / onnx_path.name
        quantize.quantize_int8(onnx_path, int8_path)
        metadata["precision"] = "int8"
        int8_model = _load(int8_path)
        set_metadata(int8_model, encode_metadata(metadata))
        save_onnx(int8_model, int8_path)
        int8_session = ort_session(int8_path)
        checks["onnxruntime_fp32"] = checks.pop("onnxruntime")
        checks["onnxruntime"] = verify(ort_runner(int8_session), torch_runner(reference), make_inputs, batches,
                                       tolerance_for("int8", cfg.export), f"level {level} ONNX (int8)", "PyTorch fp32")
        knn = quantize.int8_knn(session, int8_session, cfg, metadata, options.knn_train_samples,
                                options.knn_test_samples)
        # The int8 file (and its weights, if any) takes the place of the fp32 file and its weights.
        for name in (onnx_path.name, external_data_name(onnx_path)):
            (out / name).unlink(missing_ok=True)
            if (int8_dir / name).is_file():
                os.replace(int8_dir / name, out / name)
        shutil.rmtree(int8_dir)
        session = int8_session

    # Step 4. TensorRT engine from the ONNX file, verified against onnxruntime on the same inputs.
    engine = None
    profile = tuple(cfg.export.profile_batches) if options.dynamic else (batch, batch, batch)
    if trt is not None:
        engine_path = out / f"level{level}.engine"
        image_shape = [img_size, img_size, 3] if options.uint8_input else [3, img_size, img_size]
        info = tensorrt_build.build_engine(trt, onnx_path, engine_path, image_shape, profile, options.half,
                                           out / TIMING_CACHE)
        trt_batches = sorted({min(max(b, profile[0]), profile[2]) for b in batches})
        # A float32 engine may use TF32 matmuls (10-bit mantissa, like fp16), so it gets the fp16 tolerance.
        checks["tensorrt"] = verify(tensorrt_build.EngineRunner(trt, engine_path), ort_runner(session), make_inputs,
                                    trt_batches, tolerance_for("fp16", cfg.export), f"level {level} TensorRT engine",
                                    "onnxruntime")
        write_json({**info, "verification": checks["tensorrt"]}, out / f"level{level}.engine.json")
        engine = engine_path.name

    # Step 5. Triton model repository entry (the engine when there is one, else the ONNX file).
    triton_dir = None
    if "triton" in options.formats:
        kind = "trt" if engine else "onnx"
        model_dir = triton.write_triton_model(out / "triton", out / (engine or onnx_path.name), metadata, kind,
                                              profile[2], None if options.dynamic else batch)
        triton_dir = model_dir.relative_to(out).as_posix()

    figures = checks["onnxruntime"]["batches"][f"batch_{batches[-1]}"]["tokens"]
    notes = [f"engine {engine}"] if engine else []
    if knn and "skipped" not in knn:
        notes.append(f"k-NN top-1 fp32 {knn['fp32_top1']:.2f}% int8 {knn['int8_top1']:.2f}%")
        if knn["int8_top1"] < knn["fp32_top1"] - 0.5:
            notes.append(f"WARNING: int8 loses {knn['fp32_top1'] - knn['int8_top1']:.2f} points of k-NN top-1 "
                         f"({knn['test_samples']} test images); compare before deploying it")
    onnx_bytes = sum(p.stat().st_size for p in (onnx_path, out / external_data_name(onnx_path)) if p.is_file())
    say(f"level {level}: {onnx_path.name} ({metadata['precision']}, {onnx_bytes / 1e6:.2f} MB), "
        f"tokens max abs err {figures['max_abs_err']:.2e}, min cosine {figures['min_cosine']:.6f}"
        + "".join(f"; {note}" for note in notes))
    return {
        "onnx": onnx_path.name,
        "engine": engine,
        "engine_metadata": f"{engine}.json" if engine else None,
        "triton": triton_dir,
        "metadata": metadata,
        "verification": checks,
        "int8_knn": knn,
        "exporter": exporter,
        "opset": opset,
        "dynamic_batch": options.dynamic,
        "batch": None if options.dynamic else batch,
        "profile_batches": list(profile) if engine else None,
        "simplified": options.simplify,
        "fused_attention": fused,
        "patch_embed_matmul": any(node.name == fuse.PATCH_EMBED_NODE for node in onnx_model.graph.node),
        "onnx_bytes": onnx_bytes,  # with the external weights file of a model over 2 GB
    }


def _load(path: Path) -> Any:
    import onnx

    return onnx.load(str(path))
