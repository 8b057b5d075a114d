"""``--format trt``: a TensorRT engine built from the level's ONNX file, verified against onnxruntime."""

from __future__ import annotations

from types import ModuleType

from hjepa.export import tensorrt_build
from hjepa.export.errors import ExportError
from hjepa.export.formats.base import EXPORT_FORMATS, ExportFormat, ExportOptions, LevelJob
from hjepa.export.manifest import write_json
from hjepa.export.staging import StagedDirectory
from hjepa.export.verify import ort_runner, tolerance_for, verify

TIMING_CACHE = "tensorrt.timing.cache"


@EXPORT_FORMATS.register("trt")
class TensorRTFormat(ExportFormat):
    name = "trt"
    order = 10
    requires = ("onnx",)

    def check(self, options: ExportOptions) -> None:
        if options.int8:
            raise ExportError("--int8 is onnxruntime dynamic quantization, which TensorRT cannot run; use --half for "
                              "TensorRT, or --format onnx --int8")

    def prepare(self, options: ExportOptions) -> ModuleType:
        return tensorrt_build.require_tensorrt()  # no TensorRT or no GPU: stop before anything is traced

    def start(self, stage: StagedDirectory, resource: ModuleType) -> None:
        previous_cache = stage.previous(TIMING_CACHE)  # a re-export reuses the kernels timed last time
        if previous_cache is not None:
            (stage.path / TIMING_CACHE).write_bytes(previous_cache.read_bytes())

    def export_level(self, job: LevelJob) -> None:
        assert job.onnx_path is not None, "the onnx format runs first"
        trt, out, level, img_size = job.resources["trt"], job.out, job.level, job.img_size
        engine_path = out / f"level{level}.engine"
        image_shape = [img_size, img_size, 3] if job.options.uint8_input else [3, img_size, img_size]
        info = tensorrt_build.build_engine(trt, job.onnx_path, engine_path, image_shape, job.profile,
                                           job.options.half, out / TIMING_CACHE)
        trt_batches = sorted({min(max(b, job.profile[0]), job.profile[2]) for b in job.batches})
        # A float32 engine may use TF32 matmuls (10-bit mantissa, like fp16), so it gets the fp16 tolerance.
        job.checks["tensorrt"] = verify(tensorrt_build.EngineRunner(trt, engine_path), ort_runner(job.session),
                                        job.make_inputs, trt_batches, tolerance_for("fp16", job.cfg.export),
                                        f"level {level} TensorRT engine", "onnxruntime")
        write_json({**info, "verification": job.checks["tensorrt"]}, out / f"level{level}.engine.json")
        job.entry.update({"engine": engine_path.name, "engine_metadata": f"{engine_path.name}.json",
                          "profile_batches": list(job.profile)})
        job.notes.insert(0, f"engine {engine_path.name}")
