"""``--format onnx``: trace the level's ``LevelEncoder``, verify it on onnxruntime against PyTorch, and with
``--int8`` quantize it, verify again and measure k-NN. Every other per-level format builds on this file."""

from __future__ import annotations

import gc
import shutil
from pathlib import Path
from typing import Any

import torch

from hjepa.export import fuse, quantize
from hjepa.export.external_data import (
    finish_large_level,
    load_graph,
    save_graph,
    save_large_level,
    trace_large_level,
)
from hjepa.export.formats.base import EXPORT_FORMATS, ExportFormat, LevelJob
from hjepa.export.manifest import encode_metadata, level_metadata
from hjepa.export.onnx_export import (
    external_data_name,
    is_large,
    needs_external_data,
    save_onnx,
    set_metadata,
    simplify,
    trace_onnx,
)
from hjepa.export.verify import cpu_session, ort_runner, recorded, tolerance_for, torch_runner, verify
from hjepa.files import move
from hjepa.models.hierarchy import level_grid
from hjepa.models.level_encoder import build_level_encoder


@EXPORT_FORMATS.register("onnx")
class OnnxFormat(ExportFormat):
    name = "onnx"
    order = 0

    def export_level(self, job: LevelJob) -> None:
        cfg, level, out, options = job.cfg, job.level, job.out, job.options
        # Step 1. PyTorch fp32's outputs at every verification batch, while the torch model is in memory.
        reference = build_level_encoder(job.model, level, job.mean, job.std, job.img_size, options.uint8_input)
        expected = recorded(torch_runner(reference), job.make_inputs, job.batches)
        del reference

        # Step 2. Trace (batch >= 2 keeps the batch axis symbolic), attach metadata, check and save. A large level
        # drops the torch model here, so onnxruntime and the quantiser have the memory to themselves.
        onnx_path = out / f"level{level}.onnx"
        onnx_model, exporter, opset, fused, metadata = self._write_onnx(job, onnx_path)

        # Step 3. onnxruntime vs PyTorch float32.
        what = f"level {level} ONNX ({'fp16' if options.half else 'fp32'})"
        session = cpu_session(onnx_path)
        checks = job.checks
        checks["onnxruntime"] = verify(ort_runner(session), expected, job.make_inputs, job.batches,
                                       tolerance_for("fp16" if options.half else "fp32", cfg.export), what,
                                       "PyTorch fp32")

        # Step 4. int8: quantize the verified fp32 file, verify it, measure k-NN, and let it take the file's place.
        knn = None
        if options.int8:
            session = None  # one session at a time: each holds the whole model
            knn = self._int8(job, onnx_path, metadata, expected)

        job.onnx_path, job.session, job.metadata = onnx_path, session, metadata  # session: None for int8
        figures = checks["onnxruntime"]["batches"][f"batch_{job.batches[-1]}"]["tokens"]
        if knn and "skipped" not in knn:
            job.notes.append(f"k-NN top-1 fp32 {knn['fp32_top1']:.2f}% int8 {knn['int8_top1']:.2f}%")
            if knn["int8_top1"] < knn["fp32_top1"] - 0.5:
                job.notes.append(f"WARNING: int8 loses {knn['fp32_top1'] - knn['int8_top1']:.2f} points of k-NN "
                                 f"top-1 ({knn['test_samples']} test images); compare before deploying it")
        onnx_bytes = sum(p.stat().st_size for p in (onnx_path, out / external_data_name(onnx_path)) if p.is_file())
        job.headline = (f"level {level}: {onnx_path.name} ({metadata['precision']}, {onnx_bytes / 1e6:.2f} MB), "
                        f"tokens max abs err {figures['max_abs_err']:.2e}, min cosine {figures['min_cosine']:.6f}")
        job.entry.update({
            "onnx": onnx_path.name,
            "metadata": metadata,
            "verification": checks,
            "int8_knn": knn,
            "exporter": exporter,
            "opset": opset,
            "dynamic_batch": options.dynamic,
            "batch": None if options.dynamic else job.batch,
            "simplified": options.simplify,
            "fused_attention": fused,
            "patch_embed_matmul": any(node.name == fuse.PATCH_EMBED_NODE for node in onnx_model.graph.node),
            "onnx_bytes": onnx_bytes,  # with the external weights file of a model over 2 GB
        })

    @staticmethod
    def _int8(job: LevelJob, onnx_path: Path, metadata: dict, expected: Any) -> dict | None:
        """Quantize the verified fp32 ``onnx_path``, verify the int8 file against ``expected``, measure k-NN and
        move the int8 file (and its weights, if any) into the fp32 file's place; returns the k-NN figures."""
        out, level, options, checks = job.out, job.level, job.options, job.checks
        # In a folder of its own, under the final name: a model over 2 GB records its weights file by name
        # ("level{K}.onnx.data"), so the int8 file and its weights must be written as they will be called.
        int8_dir = out / f".level{level}.int8"
        int8_dir.mkdir()
        int8_path = int8_dir / onnx_path.name
        quantize.quantize_int8(onnx_path, int8_path)
        metadata["precision"] = "int8"
        int8_model = load_graph(int8_path)  # its weights stay where quantization wrote them
        set_metadata(int8_model, encode_metadata(metadata))
        save_graph(int8_model, int8_path)
        checks["onnxruntime_fp32"] = checks.pop("onnxruntime")
        checks["onnxruntime"] = verify(ort_runner(cpu_session(int8_path)), expected, job.make_inputs, job.batches,
                                       tolerance_for("int8", job.cfg.export), f"level {level} ONNX (int8)",
                                       "PyTorch fp32")
        # From paths: each session is opened in turn, and only if the dataset can be read.
        knn = quantize.int8_knn(onnx_path, int8_path, job.cfg, metadata, options.knn_train_samples,
                                options.knn_test_samples)
        for name in (onnx_path.name, external_data_name(onnx_path)):
            (out / name).unlink(missing_ok=True)
            if (int8_dir / name).is_file():
                move(int8_dir / name, out / name)
        shutil.rmtree(int8_dir)
        return knn

    @staticmethod
    def _write_onnx(job: LevelJob, onnx_path: Path) -> tuple[Any, str, int, int, dict]:
        """Trace the level (fp16 with ``--half``) to ``onnx_path`` (simplified, fused for onnxruntime's CPU kernels
        where asked); returns ``(graph written, exporter, opset, attention blocks fused, metadata)``. A level over
        2 GB is traced straight to a file with its weights in ``level{K}.onnx.data`` (``external_data``), and the
        torch model is dropped (``ExportSource.release``) before onnxruntime opens it."""
        cfg, options, level = job.cfg, job.options, job.level
        module = build_level_encoder(job.model, level, job.mean, job.std, job.img_size, options.uint8_input,
                                     half=options.half)
        opset = options.opset or cfg.export.opset
        example = torch.from_numpy(job.make_inputs(max(job.batch, 2) if options.dynamic else job.batch))
        metadata = level_metadata(cfg, level, job.img_size, level_grid(module.grid, level), job.model.head_dim,
                                  (job.mean, job.std), job.input_format, job.sha,
                                  "fp16" if options.half else "fp32", job.provenance)
        fuse_wanted = options.fuse and not options.half and job.resources.get("trt") is None
        fuse_inputs = job.make_inputs(job.batch) if fuse_wanted else None
        if is_large(module):
            job.source.release()  # `module` keeps the weights it needs (fp16: a copy of its own)
            traced = trace_large_level(module, example, opset, options.dynamic, onnx_path, encode_metadata(metadata))
            del module
            gc.collect()  # torch.export leaves reference cycles that hold the weights
            onnx_model, fused = finish_large_level(traced, onnx_path, options.simplify, fuse_inputs)
            return onnx_model, "dynamo", opset, fused, metadata
        onnx_model, exporter = trace_onnx(module, example, opset, options.dynamic)
        # The TorchScript fallback stops at opset 20: record the opset the file has, not the one asked for.
        opset = next((o.version for o in onnx_model.opset_import if o.domain in ("", "ai.onnx")), opset)
        set_metadata(onnx_model, encode_metadata(metadata))
        fused = 0
        if needs_external_data(onnx_model):  # larger than its weights said: weights to level{K}.onnx.data first
            onnx_model, fused = save_large_level(onnx_model, onnx_path, options.simplify, fuse_inputs)
            return onnx_model, exporter, opset, fused, metadata
        if options.simplify:
            onnx_model = simplify(onnx_model)
        if fuse_inputs is not None:
            onnx_model, fused = fuse.fuse_for_cpu(onnx_model, fuse_inputs)
        save_onnx(onnx_model, onnx_path)
        return onnx_model, exporter, opset, fused, metadata
