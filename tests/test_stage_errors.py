"""A failure inside a dependency (protobuf, onnx, torch) during import or export is one line naming the stage and
the cause, with a non-zero exit and nothing written to ``--out``."""

from __future__ import annotations

from click.testing import CliRunner
from google.protobuf.message import EncodeError

from hjepa.cli.export import main as export_main
from hjepa.cli.importer import main as import_main
from tests.test_importers import ijepa_checkpoint


def test_a_protobuf_failure_in_export_is_one_line_and_leaves_nothing(tiny_checkpoint, tmp_path, monkeypatch):
    from hjepa.export.formats import onnx as onnx_format

    def too_big(*args, **kwargs):
        raise EncodeError("Failed to serialize proto")

    monkeypatch.setattr(onnx_format, "save_onnx", too_big)
    out = tmp_path / "exp"
    result = CliRunner().invoke(export_main, [str(tiny_checkpoint), "--level", "0", "--out", str(out)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "level 0: onnx export failed: EncodeError: Failed to serialize proto" in lines[0]
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".exp")]


def test_a_torch_failure_in_import_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    from hjepa.importers import api

    def broken(*args, **kwargs):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied\n(deep inside torch)")

    monkeypatch.setattr(api, "measure_parity", broken)
    source = tmp_path / "IN1K-tiny.pth.tar"
    ijepa_checkpoint(source)
    result = CliRunner().invoke(import_main, [str(source), "--num-heads", "4", "--out", str(tmp_path / "a")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = result.output.strip().splitlines()  # a progress line, then the error
    assert lines[-1].startswith("Error: the parity check failed: RuntimeError: mat1 and mat2")
    assert sum(line.startswith("Error") for line in lines) == 1
    assert not (tmp_path / "a").exists()
