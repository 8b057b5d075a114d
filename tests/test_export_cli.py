"""``hjepa-export`` through click: a success with a Triton repository, replacement, and every bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

from hjepa.cli.export import main
from hjepa.config import load_config
from hjepa.export import Tolerance, default_out_dir
from hjepa.export.formats import onnx as onnx_format


def run(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


def entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_triton_export_succeeds_with_the_repository_layout(tiny_checkpoint, tmp_path):
    out = tmp_path / "exp"
    code, output = run(tiny_checkpoint, "--level", "1", "--format", "triton", "--out", out)
    assert code == 0, output
    assert "level 1: level1.onnx (fp32" in output and f"export written to {out}" in output
    assert entries(out) == ["level1.onnx", "manifest.json", "triton"]
    model_dir = out / "triton" / "hjepa_l1"
    assert (model_dir / "1" / "model.onnx").read_bytes() == (out / "level1.onnx").read_bytes()
    config = (model_dir / "config.pbtxt").read_text()
    for expected in ['name: "hjepa_l1"', 'platform: "onnxruntime_onnx"', "max_batch_size: 64",
                     'name: "images"', "data_type: TYPE_FP32", "dims: [ 3, 16, 16 ]", 'name: "tokens"',
                     "dims: [ 4, 32 ]", 'name: "pooled"', "dims: [ 32 ]", "dynamic_batching {",
                     "preferred_batch_size: [ 8, 16, 32, 64 ]"]:
        assert expected in config, expected
    assert config.count("{") == config.count("}") and config.count("[") == config.count("]")
    manifest = json.loads((out / "manifest.json").read_text())
    assert list(manifest["levels"]) == ["1"] and manifest["levels"]["1"]["triton"] == "triton/hjepa_l1"

    assert manifest["levels"]["1"]["fused_attention"] > 0  # onnxruntime's fused attention by default

    # Exporting again into the same folder replaces the previous export as a whole; --no-fuse keeps standard ops.
    code, output = run(tiny_checkpoint, "--level", "0", "--out", out, "--no-fuse")
    assert code == 0, output
    assert entries(out) == ["level0.onnx", "manifest.json"]
    assert json.loads((out / "manifest.json").read_text())["levels"]["0"]["fused_attention"] == 0
    assert not [n for n in onnx.load(out / "level0.onnx").graph.node if n.domain == "com.microsoft"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_default_out_dir_is_named_after_the_run(tiny_checkpoint):
    cfg = load_config("digits-debug")
    assert default_out_dir(tiny_checkpoint, cfg) == Path("exports") / tiny_checkpoint.parent.parent.name
    assert default_out_dir(Path("/tmp/model.pt"), cfg) == Path("exports") / "digits-debug"


@pytest.fixture
def blockers(tmp_path):
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "notes.txt").write_text("mine")
    (tmp_path / "corrupt.pt").write_bytes(b"PK\x03\x04 this is not a zip archive")
    return tmp_path


BAD_INPUTS = [
    (["--level", "7"], "level 7 is not in last.pt; available levels: [0, 1]"),
    (["--level", "-1"], "level -1 is not in last.pt; available levels: [0, 1]"),
    (["--level", "x"], "level 'x' is not a level number, a comma-separated list or 'all'"),
    (["--img-size", "18"], "image size 18 is not usable for level 1: it must be a positive multiple of patch_size"),
    (["--img-size", "20", "--level", "1"], "patch_size * 2^1 = 8"),
    (["--img-size", "0"], "--img-size must be positive"),
    (["--opset", "12"], "opset 12 is not supported; choose 18..23"),
    (["--half", "--int8"], "--half and --int8 exclude each other"),
    (["--int8", "--format", "trt"], "TensorRT cannot run"),
    (["--batch", "0"], "--batch must be at least 1"),
    (["--out", "{tmp}/a_file"], "exists and is not a directory"),
    (["--out", "{tmp}/a_file/sub/out"], "a_file is a file, not a directory"),
    (["--out", "{tmp}/stuff"], "is not empty and holds no hjepa export"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_is_one_line_and_leaves_nothing(tiny_checkpoint, blockers, args, message):
    before = entries(blockers)
    out_args = [a.replace("{tmp}", str(blockers)) for a in args]
    if "--out" not in out_args:
        out_args += ["--out", str(blockers / "new")]
    code, output = run(tiny_checkpoint, *out_args)
    assert code == 1
    assert message in output and output.startswith("Error: ") and output.strip().count("\n") == 0, output
    assert entries(blockers) == before
    assert entries(blockers / "stuff") == ["notes.txt"]


@pytest.mark.parametrize("name", ["corrupt.pt", "missing.pt"])
def test_unusable_checkpoint_is_one_line(blockers, name):
    code, output = run(blockers / name, "--out", blockers / "new")
    assert code == 1 and output.startswith("Error: checkpoint ") and str(blockers / name) in output
    assert output.strip().count("\n") == 0 and not (blockers / "new").exists()


def test_missing_tensorrt_says_what_to_install(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "tensorrt", None)  # import tensorrt -> ImportError
    code, output = run(tiny_checkpoint, "--format", "trt", "--out", tmp_path / "trt")
    assert code == 1 and "TensorRT" in output and "pip install tensorrt" in output and "hjepa[gpu]" in output
    assert not (tmp_path / "trt").exists()


def test_output_under_a_regular_file_is_one_line(tiny_checkpoint, tmp_path):
    # Unwritable even for root (CI runs as root, which ignores folder permissions): the parent is a plain file.
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, output = run(tiny_checkpoint, "--out", blocker / "out")
    assert code == 1 and output.startswith("Error: ") and output.strip().count("\n") == 0
    assert blocker.read_text() == "not a folder" and entries(tmp_path) == ["file"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions; covered by the regular-file test")
def test_read_only_parent_is_one_line(tiny_checkpoint, tmp_path):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        code, output = run(tiny_checkpoint, "--out", parent / "out")
    finally:
        parent.chmod(0o700)
    assert code == 1 and "cannot write the export" in output and entries(parent) == []


def test_failed_verification_of_a_later_level_leaves_nothing(tiny_checkpoint, tmp_path, monkeypatch):
    calls = []

    def strict_on_second_level(precision, cfg):
        calls.append(precision)
        return Tolerance(cfg.atol, cfg.min_cosine) if len(calls) == 1 else Tolerance(0.0, 1.0)

    monkeypatch.setattr(onnx_format, "tolerance_for", strict_on_second_level)
    out = tmp_path / "nested" / "exp"
    code, output = run(tiny_checkpoint, "--level", "all", "--out", out)
    assert code == 1 and len(calls) == 2
    assert "level 1 ONNX (fp32) does not match PyTorch fp32 at batch 1" in output and "(allowed 0)" in output
    assert entries(tmp_path) == [], "the export, its staging folder and the parents it created must all be gone"


def test_int8_that_loses_knn_accuracy_is_flagged(tiny_checkpoint, tmp_path, monkeypatch):
    from hjepa.export import quantize

    def lossy(*args, **kwargs):
        return {"dataset": "digits", "train_samples": 1437, "test_samples": 360, "k": 20, "temperature": 0.07,
                "fp32_top1": 60.0, "int8_top1": 58.0, "delta_top1": -2.0}

    monkeypatch.setattr(quantize, "int8_knn", lossy)
    code, output = run(tiny_checkpoint, "--level", "0", "--int8", "--out", tmp_path / "exp")
    assert code == 0, output
    assert "WARNING: int8 loses 2.00 points of k-NN top-1 (360 test images)" in output
    monkeypatch.setattr(quantize, "int8_knn", lambda *a, **k: {**lossy(), "int8_top1": 59.6, "delta_top1": -0.4})
    code, output = run(tiny_checkpoint, "--level", "0", "--int8", "--out", tmp_path / "exp")
    assert code == 0 and "WARNING" not in output, output
