"""Re-exporting into a folder replaces the previous export as a whole, so anything else in it must stop the export."""

from __future__ import annotations

import shutil

from click.testing import CliRunner

from hjepa.cli.export import main


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_files_that_are_not_the_export_are_never_deleted(tiny_checkpoint, tmp_path):
    out = tmp_path / "deploy"
    result = CliRunner().invoke(main, [str(tiny_checkpoint), "--level", "0", "--out", str(out)])
    assert result.exit_code == 0, result.output
    # The user keeps their own files beside the export: a note, and the checkpoint the export came from.
    (out / "NOTES.md").write_text("how we deploy this")
    shutil.copyfile(tiny_checkpoint, out / "model.pt")
    before = snapshot(out)
    for checkpoint in (tiny_checkpoint, out / "model.pt"):
        result = CliRunner().invoke(main, [str(checkpoint), "--level", "1", "--out", str(out)])
        assert result.exit_code == 1, result.output
        assert result.output.startswith("Error: ") and result.output.strip().count("\n") == 0, result.output
        assert "NOTES.md" in result.output and "model.pt" in result.output and "--out" in result.output
        assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deploy"]
    # Without them, the folder is an export again and is replaced as before.
    (out / "NOTES.md").unlink()
    (out / "model.pt").unlink()
    result = CliRunner().invoke(main, [str(tiny_checkpoint), "--level", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["level1.onnx", "manifest.json"]
