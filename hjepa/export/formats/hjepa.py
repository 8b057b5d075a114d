"""``--format hjepa``: the encoder-only artifact (``encoder.safetensors`` + ``encoder.json``), every level at once,
whatever ``--level`` says; a SOURCE for export, eval and serve."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hjepa.export.formats.base import EXPORT_FORMATS, ExportFormat
from hjepa.inference.artifacts.artifact import SPEC_NAME, WEIGHTS_NAME, LoadedModel, write_artifact
from hjepa.logs import Log


@EXPORT_FORMATS.register("hjepa")
class ArtifactFormat(ExportFormat):
    name = "hjepa"
    order = 30
    per_level = False

    def export_model(self, loaded: LoadedModel, out: Path, manifest: dict[str, Any], log: Log) -> None:
        manifest["artifact"] = {"spec": SPEC_NAME, "weights": WEIGHTS_NAME,
                                "levels": write_artifact(loaded, out)["feature"]["levels"]}
        log(f"encoder artifact: {SPEC_NAME} + {WEIGHTS_NAME} (levels {manifest['artifact']['levels']})")
