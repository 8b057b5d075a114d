"""``--format triton``: a Triton model repository entry (``config.pbtxt``) for the level's engine when one was built,
else for its ONNX file."""

from __future__ import annotations

from hjepa.export import triton
from hjepa.export.formats.base import EXPORT_FORMATS, ExportFormat, LevelJob


@EXPORT_FORMATS.register("triton")
class TritonFormat(ExportFormat):
    name = "triton"
    order = 20  # after trt, so that the engine is what Triton serves
    requires = ("onnx",)

    def export_level(self, job: LevelJob) -> None:
        assert job.onnx_path is not None, "the onnx format runs first"
        engine = job.entry.get("engine")
        kind = "trt" if engine else "onnx"
        model_dir = triton.write_triton_model(job.out / "triton", job.out / (engine or job.onnx_path.name),
                                              job.metadata, kind, job.profile[2],
                                              None if job.options.dynamic else job.batch)
        job.entry["triton"] = model_dir.relative_to(job.out).as_posix()
