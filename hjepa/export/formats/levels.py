"""``--format levels``: one ONNX graph for every exported level, ``levels.onnx``, with the named outputs
``tokens_K`` / ``pooled_K`` per level, so a deployment that reads several levels runs the encoder once.

Written beside the per-level files (which the runtimes read), traced, fused and verified against PyTorch the same
way; a graph over 2 GB keeps its weights in ``levels.onnx.data``. fp32 (and ``--uint8-input``) only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from hjepa.export import fuse
from hjepa.export.errors import ExportError
from hjepa.export.external_data import export_large_level
from hjepa.export.formats.base import EXPORT_FORMATS, ExportFormat, ExportOptions, Log
from hjepa.export.manifest import encode_metadata
from hjepa.export.onnx_export import is_large, needs_external_data, save_onnx, set_metadata, trace_onnx
from hjepa.export.verify import cpu_session, ort_runner, sample_inputs, tolerance_for, verify
from hjepa.inference.artifacts.artifact import LoadedModel
from hjepa.models.level_encoder import build_level_encoder

LEVELS_FILE = "levels.onnx"


def output_names(levels: list[int]) -> list[str]:
    """``tokens_K``, ``pooled_K`` for each level, in level order."""
    return [f"{kind}_{level}" for level in levels for kind in ("tokens", "pooled")]


class AllLevels(nn.Module):
    """Images -> ``(tokens_K, pooled_K)`` for every level in ``levels``, from one encoder pass."""

    def __init__(self, model: nn.Module, levels: list[int], options: ExportOptions, stats: tuple) -> None:
        super().__init__()
        img_size = options.img_size or model.config.model.img_size
        self.inner = build_level_encoder(model, levels[0], *stats, img_size, options.uint8_input)
        self.inner.level_heads = nn.ModuleDict(
            {str(k): build_level_encoder(model, k, *stats, img_size).head for k in levels[1:]})
        self.levels = levels

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.inner.features(images, self.levels)
        return tuple(t for level in self.levels for t in out[level])


@EXPORT_FORMATS.register("levels")
class AllLevelsFormat(ExportFormat):
    name = "levels"
    order = 20
    per_level = False
    requires = ("onnx",)

    def check(self, options: ExportOptions) -> None:
        if options.half or options.int8:
            raise ExportError("--format levels writes the fp32 graph; drop --half / --int8 (or export per level)")

    def prepare(self, options: ExportOptions) -> None:
        self.options = options  # a format instance lives for one export; export_model reads them

    def export_model(self, loaded: LoadedModel, out: Path, manifest: dict[str, Any], say: Log) -> None:
        options = self.options
        levels = sorted(int(k) for k in manifest["levels"])
        module = AllLevels(loaded.model, levels, options, (loaded.mean, loaded.std)).eval()
        first = manifest["levels"][str(levels[0])]["metadata"]
        names = output_names(levels)
        metadata = {**encode_metadata(first), "levels": json.dumps(levels), "outputs": json.dumps(names)}

        def make_inputs(batch: int) -> Any:
            return sample_inputs(batch, first["img_size"], first["input_format"], loaded.mean, loaded.std, seed=9)

        batch = options.batch or loaded.config.export.verify_batch
        example = torch.from_numpy(make_inputs(max(batch, 2)))
        opset = options.opset or loaded.config.export.opset
        path = out / LEVELS_FILE
        fuse_inputs = make_inputs(batch) if options.fuse else None
        if is_large(module):
            _, fused = export_large_level(module, example, opset, options.dynamic, path, metadata, False,
                                          fuse_inputs, names)
        else:
            graph, _ = trace_onnx(module, example, opset, options.dynamic, names)
            set_metadata(graph, metadata)
            fused = 0
            if fuse_inputs is not None and not needs_external_data(graph):
                graph, fused = fuse.fuse_for_cpu(graph, fuse_inputs, tuple(names))
            save_onnx(graph, path)

        @torch.no_grad()
        def torch_outputs(inputs: Any) -> list[Any]:
            return [t.numpy() for t in module(torch.from_numpy(inputs))]

        checks = verify(ort_runner(cpu_session(path), names), torch_outputs, make_inputs, sorted({1, batch}),
                        tolerance_for("fp32", loaded.config.export), f"{LEVELS_FILE} (levels {levels})",
                        "PyTorch fp32", names)
        size = sum(p.stat().st_size for p in (path, out / f"{LEVELS_FILE}.data") if p.is_file())
        manifest["all_levels"] = {"onnx": LEVELS_FILE, "levels": levels, "outputs": names, "fused_attention": fused,
                                  "onnx_bytes": size, "verification": checks}
        say(f"all levels: {LEVELS_FILE} ({size / 1e6:.2f} MB), outputs {', '.join(names)}")
