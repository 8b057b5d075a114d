"""Export formats are registry entries: each registered name resolves (with what it builds on), and a new back-end
registered from outside runs level by level inside the staging folder like the built-in ones."""

import pytest

from hjepa.export import ExportError, ExportOptions, export
from hjepa.export.formats import EXPORT_FORMATS, ExportFormat, LevelJob, format_names, resolve_formats


@pytest.mark.parametrize("name", format_names())
def test_every_format_resolves_with_what_it_requires(name):
    formats = resolve_formats([name])
    assert [fmt.name for fmt in formats][-1] == name or not formats[-1].per_level
    assert name in [fmt.name for fmt in formats]
    assert all(required in [fmt.name for fmt in formats] for fmt in formats for required in fmt.requires)
    assert [fmt.order for fmt in formats] == sorted(fmt.order for fmt in formats)


def test_unknown_format_lists_the_valid_ones():
    with pytest.raises(ExportError, match=r"unknown format 'tflite'; valid formats: hjepa, levels, onnx, triton, trt"):
        ExportOptions(formats=("tflite",)).validate()


def test_a_new_format_is_one_registration(tiny_checkpoint, tmp_path, monkeypatch):
    class SizeFile(ExportFormat):
        name = "sizes"
        order = 50
        requires = ("onnx",)

        def export_level(self, job: LevelJob) -> None:
            assert job.onnx_path is not None and job.onnx_path.is_file()
            (job.out / f"level{job.level}.size").write_text(str(job.onnx_path.stat().st_size))
            job.entry["sizes"] = f"level{job.level}.size"

    monkeypatch.setitem(EXPORT_FORMATS._items, "sizes", SizeFile)
    manifest = export(tiny_checkpoint, "1", tmp_path / "out", ExportOptions(formats=("sizes",)))
    entry = manifest["levels"]["1"]
    assert entry["sizes"] == "level1.size" and entry["onnx"] == "level1.onnx" and entry["engine"] is None
    assert int((tmp_path / "out" / "level1.size").read_text()) > 0
