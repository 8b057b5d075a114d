"""The encoder artifact (``hjepa-export --format hjepa``) and one-pass multi-level features."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from hjepa.cli.export import main as export_main
from hjepa.evaluation.sources import resolve_source
from hjepa.inference import open_runtime, source_kind
from hjepa.inference.artifacts.artifact import SPEC_NAME, WEIGHTS_NAME, load_source_model
from hjepa.inference.artifacts.checkpoint import CheckpointError


@pytest.fixture(scope="module")
def artifact_dir(tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("artifact") / "encoder"
    result = CliRunner().invoke(export_main, [str(tiny_checkpoint), "--format", "hjepa", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_artifact_holds_only_inference_weights_and_its_metadata(artifact_dir, tiny_checkpoint):
    from safetensors import safe_open

    assert sorted(p.name for p in artifact_dir.iterdir()) == sorted([SPEC_NAME, WEIGHTS_NAME, "manifest.json"])
    with safe_open(str(artifact_dir / WEIGHTS_NAME), framework="pt") as handle:
        keys = list(handle.keys())
    assert keys and all(k.startswith(("target_encoder.", "target_heads.")) for k in keys)
    spec = json.loads((artifact_dir / SPEC_NAME).read_text())
    checkpoint = load_source_model(tiny_checkpoint)
    assert spec["preprocessing"]["mean"] == list(checkpoint.mean)
    assert spec["provenance"]["source_sha256"] == checkpoint.source_sha256
    assert spec["architecture"]["class_token"] is False
    assert spec["feature"]["levels"] == list(range(checkpoint.model.num_levels))
    assert source_kind(artifact_dir) == "artifact"


def test_artifact_embeds_like_the_checkpoint(artifact_dir, tiny_checkpoint):
    images = np.random.default_rng(0).integers(0, 256, (3, 40, 40, 3), dtype=np.uint8)
    from_checkpoint = open_runtime(tiny_checkpoint, device="cpu")
    from_artifact = open_runtime(artifact_dir, device="cpu")
    assert from_artifact.metadata.mean == from_checkpoint.metadata.mean
    for level in from_checkpoint.levels:
        expected = from_checkpoint.embed(images, level)
        got = from_artifact.embed(images, level)
        np.testing.assert_allclose(got[1], expected[1], atol=1e-6)
    source = resolve_source(artifact_dir, device="cpu")
    assert source.kind == "artifact" and source.levels == from_checkpoint.levels


def test_one_pass_levels_equal_per_level_passes(tiny_checkpoint):
    runtime = open_runtime(tiny_checkpoint, device="cpu")
    batch = runtime.preprocess(np.random.default_rng(1).integers(0, 256, (5, 24, 24, 3), dtype=np.uint8))
    levels = runtime.levels
    calls = []
    encoder = runtime.model.target_encoder
    hook = encoder.register_forward_hook(lambda *args: calls.append(1))
    together = runtime.embed_levels(batch, levels, with_tokens=False)
    hook.remove()
    assert len(calls) == 1  # one encoder pass for every level
    for level in levels:
        tokens, pooled = runtime.embed_preprocessed(batch, level)
        assert together[level][0] is None
        np.testing.assert_allclose(together[level][1], pooled, atol=1e-6)


def test_export_reads_the_artifact_as_a_source(artifact_dir, tmp_path):
    result = CliRunner().invoke(export_main, [str(artifact_dir), "--level", "0", "--out", str(tmp_path / "onnx")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "onnx" / "level0.onnx").is_file()


def test_a_damaged_artifact_is_one_clear_error(artifact_dir, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    spec = json.loads((artifact_dir / SPEC_NAME).read_text())
    spec.pop("weights_sha256")  # as an artifact written before the digest was recorded
    (broken / SPEC_NAME).write_text(json.dumps(spec))
    (broken / WEIGHTS_NAME).write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="unreadable"):
        load_source_model(broken)


def test_flipped_bytes_in_the_artifact_weights_are_refused(artifact_dir, tmp_path):
    """safetensors has no checksum: the SHA-256 recorded in encoder.json catches what it would load silently."""
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / SPEC_NAME).write_text((artifact_dir / SPEC_NAME).read_text())
    data = bytearray((artifact_dir / WEIGHTS_NAME).read_bytes())
    data[-200:-100] = bytes(255 - b for b in data[-200:-100])  # inside the last tensor's bytes, header intact
    (damaged / WEIGHTS_NAME).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt.*SHA-256"):
        load_source_model(damaged)
    spec = json.loads((damaged / SPEC_NAME).read_text())
    spec.pop("weights_sha256")
    (damaged / SPEC_NAME).write_text(json.dumps(spec))
    load_source_model(damaged)  # without the digest the same file loads: the check is what refused it
