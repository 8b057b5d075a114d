"""hjepa-import: tiny checkpoints in every source layout, built here from random weights, converted exactly.

Each layout is written as its project writes it (I-JEPA train.py with DDP ``module.`` prefixes, a Hugging Face
IJepaModel directory, a timm ViT with a class token and classifier, the seed H-JEPA ``model_state_dict``); the
import must reproduce the independent reference forward, and the artifact must load, export and evaluate.
"""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from hjepa.cli.importer import main as import_main
from hjepa.importers import ImportOptions, ImportSourceError, import_encoder
from hjepa.importers.cards import find_card
from hjepa.importers.reference import ReferenceSpec, reference_levels, reference_tokens
from hjepa.inference.artifacts.artifact import SPEC_NAME, load_source_model

DIM, DEPTH, HEADS, HIDDEN, PATCH, SIZE = 32, 2, 4, 96, 4, 32  # MLP ratio 3: not timm's default 4
GRID = SIZE // PATCH


def fused_vit(seed: int, class_token: bool = False) -> dict[str, torch.Tensor]:
    """A random ViT in timm / I-JEPA names; norms and biases are not at their init values, so a swap shows."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape: int, scale: float = 0.2) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    sd = {"patch_embed.proj.weight": rand(DIM, 3, PATCH, PATCH), "patch_embed.proj.bias": rand(DIM),
          "pos_embed": rand(1, GRID * GRID + int(class_token), DIM, scale=1.0)}
    if class_token:
        sd["cls_token"] = rand(1, 1, DIM, scale=1.0)
    for i in range(DEPTH):
        b = f"blocks.{i}."
        sd.update({
            b + "norm1.weight": 1 + rand(DIM), b + "norm1.bias": rand(DIM),
            b + "attn.qkv.weight": rand(3 * DIM, DIM), b + "attn.qkv.bias": rand(3 * DIM),
            b + "attn.proj.weight": rand(DIM, DIM), b + "attn.proj.bias": rand(DIM),
            b + "norm2.weight": 1 + rand(DIM), b + "norm2.bias": rand(DIM),
            b + "mlp.fc1.weight": rand(HIDDEN, DIM), b + "mlp.fc1.bias": rand(HIDDEN),
            b + "mlp.fc2.weight": rand(DIM, HIDDEN), b + "mlp.fc2.bias": rand(DIM),
        })
    sd["norm.weight"], sd["norm.bias"] = 1 + rand(DIM), rand(DIM)
    return sd


def ijepa_checkpoint(path, target: dict | None = None) -> dict:
    """I-JEPA train.py's save_dict, every encoder behind DistributedDataParallel."""
    target = fused_vit(1) if target is None else target
    state = {
        "encoder": {f"module.{k}": v for k, v in fused_vit(2).items()},
        "predictor": {"module.predictor_embed.weight": torch.zeros(8, DIM)},
        "target_encoder": {f"module.{k}": v for k, v in target.items()},
        "opt": {"state": {}, "param_groups": [{"lr": 0.001, "params": [0, 1]}]},
        "scaler": None, "epoch": 7, "loss": 0.25, "batch_size": 16, "world_size": 2, "lr": 0.001,
    }
    torch.save(state, path)
    return state


def hf_directory(directory, eps: float = 1e-12) -> dict[str, torch.Tensor]:
    """An IJepaModel save_pretrained directory (split query / key / value, HF names, config.json)."""
    src = fused_vit(3)
    hf = {"embeddings.patch_embeddings.projection.weight": src["patch_embed.proj.weight"],
          "embeddings.patch_embeddings.projection.bias": src["patch_embed.proj.bias"],
          "embeddings.position_embeddings": src["pos_embed"],
          "layernorm.weight": src["norm.weight"], "layernorm.bias": src["norm.bias"]}
    for i in range(DEPTH):
        b, e = f"blocks.{i}.", f"encoder.layer.{i}."
        for name, chunk_w, chunk_b in zip(("query", "key", "value"), src[b + "attn.qkv.weight"].chunk(3),
                                          src[b + "attn.qkv.bias"].chunk(3), strict=True):
            hf[f"{e}attention.attention.{name}.weight"] = chunk_w.clone()
            hf[f"{e}attention.attention.{name}.bias"] = chunk_b.clone()
        for ours, theirs in (("norm1", "layernorm_before"), ("attn.proj", "attention.output.dense"),
                             ("norm2", "layernorm_after"), ("mlp.fc1", "intermediate.dense"),
                             ("mlp.fc2", "output.dense")):
            hf[f"{e}{theirs}.weight"], hf[f"{e}{theirs}.bias"] = src[f"{b}{ours}.weight"], src[f"{b}{ours}.bias"]
    directory.mkdir()
    save_file({k: v.contiguous() for k, v in hf.items()}, str(directory / "model.safetensors"))
    config = {"model_type": "ijepa", "hidden_size": DIM, "num_hidden_layers": DEPTH, "num_attention_heads": HEADS,
              "intermediate_size": HIDDEN, "hidden_act": "gelu", "layer_norm_eps": eps, "image_size": SIZE,
              "patch_size": PATCH, "num_channels": 3, "qkv_bias": True}
    (directory / "config.json").write_text(json.dumps(config))
    return hf


@pytest.fixture
def ijepa_file(tmp_path):
    path = tmp_path / "IN1K-tiny.pth.tar"
    ijepa_checkpoint(path)
    return path


def make_source(kind: str, tmp_path):
    """(source path, --from name, options) for one layout."""
    if kind == "ijepa":
        path = tmp_path / "ijepa.pth.tar"
        ijepa_checkpoint(path)
        return path, ImportOptions(num_heads=HEADS)
    if kind == "hf-ijepa":
        hf_directory(tmp_path / "hf")
        return tmp_path / "hf", ImportOptions()
    if kind == "timm":
        sd = fused_vit(4, class_token=True)
        sd["head.weight"], sd["head.bias"] = torch.zeros(10, DIM), torch.zeros(10)
        path = tmp_path / "vit.pth"
        torch.save(sd, path)
        return path, ImportOptions(num_heads=HEADS)
    sd = {f"target_encoder.vit.{k}": v for k, v in fused_vit(5, class_token=True).items()}
    sd.update({f"context_encoder.vit.{k}": v for k, v in fused_vit(6, class_token=True).items()})
    sd["predictor.mask_token"] = torch.zeros(1, 1, DIM)
    path = tmp_path / "seed.pt"
    torch.save({"model_state_dict": sd, "epoch": 3, "optimizer_state_dict": {}}, path)
    return path, ImportOptions(num_heads=HEADS)


@pytest.mark.parametrize("kind", ["ijepa", "hf-ijepa", "timm", "hjepa-seed"])
def test_every_layout_imports_with_parity(kind, tmp_path):
    source, options = make_source(kind, tmp_path)
    out = tmp_path / "artifact"
    spec = import_encoder(source, out, options)
    assert spec["provenance"]["source_format"] == kind
    assert spec["architecture"]["num_levels"] == 4 and spec["architecture"]["mlp_hidden_dim"] == HIDDEN
    assert spec["architecture"]["class_token"] == (kind in ("timm", "hjepa-seed"))
    for batch in ("batch_1", "batch_4"):
        for level in range(4):
            row = spec["parity"][batch][f"level{level}"]
            assert row["max_abs_diff"] < 1e-5 and row["min_cosine"] > 1 - 1e-6, (batch, level, row)
    assert json.loads((out / SPEC_NAME).read_text())["parity"] == json.loads(json.dumps(spec["parity"]))
    # The written artifact, loaded back as export / eval / serve load it, still matches the reference.
    loaded = load_source_model(out)
    images = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(9))
    ours = loaded.model.extract_levels(images, [0, 2])
    raw, layout = _raw(kind, source)
    reference = reference_levels(reference_tokens(raw, layout, images), (GRID, GRID), [0, 2], "identity")
    for level in (0, 2):
        assert (ours[level][0].double() - reference[level][0]).abs().max() < 1e-5


def _raw(kind: str, source) -> tuple[dict[str, torch.Tensor], ReferenceSpec]:
    if kind == "ijepa":
        state = torch.load(source, weights_only=True)["target_encoder"]
        return state, ReferenceSpec("fused", "module.", HEADS, 1e-6, DEPTH)
    if kind == "hf-ijepa":
        from safetensors.torch import load_file

        return load_file(str(source / "model.safetensors")), ReferenceSpec("hf", "", HEADS, 1e-12, DEPTH)
    if kind == "timm":
        return torch.load(source, weights_only=True), ReferenceSpec("fused", "", HEADS, 1e-6, DEPTH, True)
    state = torch.load(source, weights_only=True)["model_state_dict"]
    return state, ReferenceSpec("fused", "target_encoder.vit.", HEADS, 1e-6, DEPTH, True)


def test_ijepa_records_provenance_licence_and_the_target_encoder(ijepa_file, tmp_path):
    spec = import_encoder(ijepa_file, tmp_path / "a", ImportOptions(num_heads=HEADS, levels=2, head="layernorm"))
    provenance = spec["provenance"]
    assert provenance["licence"] == "CC-BY-NC-4.0" and provenance["epoch"] == 7
    assert provenance["encoder"] == "target_encoder" and "predictor" in provenance["not_imported"]
    assert spec["feature"]["level_head"] == "layernorm" and spec["architecture"]["num_levels"] == 2
    # The stored position table travels as a weight, not hjepa's own sin-cos table.
    loaded = load_source_model(tmp_path / "a")
    stored = torch.load(ijepa_file, weights_only=True)["target_encoder"]["module.pos_embed"]
    assert torch.equal(loaded.model.target_encoder.pos_embed, stored)
    context = import_encoder(ijepa_file, tmp_path / "c", ImportOptions(num_heads=HEADS, encoder="context"))
    assert context["provenance"]["encoder"] == "encoder"
    assert context["provenance"]["source_sha256"] == spec["provenance"]["source_sha256"]


def test_a_wrong_conversion_fails_parity_and_writes_nothing(ijepa_file, tmp_path, monkeypatch):
    """A converter bug that keeps every shape (a square weight transposed) is caught by the reference forward."""
    from hjepa.importers.source import SourceWeights

    take = SourceWeights.take

    def transposed_proj(self, key, shape=None):
        tensor = take(self, key, shape)
        return tensor.T.contiguous() if key.endswith("attn.proj.weight") else tensor

    monkeypatch.setattr(SourceWeights, "take", transposed_proj)
    with pytest.raises(ImportSourceError, match="does not reproduce the source"):
        import_encoder(ijepa_file, tmp_path / "a", ImportOptions(num_heads=HEADS))
    assert not (tmp_path / "a").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".a.partial")]


def test_the_head_count_must_come_from_somewhere(ijepa_file, tmp_path):
    with pytest.raises(ImportSourceError, match="--num-heads"):
        import_encoder(ijepa_file, tmp_path / "a")
    with pytest.raises(ImportSourceError, match="is not vit_huge_patch14_224"):
        import_encoder(ijepa_file, tmp_path / "a", ImportOptions(arch="vit_huge_patch14_224"))


def test_a_left_over_tensor_is_a_partial_load(tmp_path):
    target = fused_vit(1)
    target["blocks.0.attn.extra_scale"] = torch.ones(1)
    ijepa_checkpoint(tmp_path / "x.pth.tar", target)
    with pytest.raises(ImportSourceError, match=r"left unused.*blocks\.0\.attn\.extra_scale"):
        import_encoder(tmp_path / "x.pth.tar", tmp_path / "a", ImportOptions(num_heads=HEADS))
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("key, tensor, why", [
    ("blocks.0.ls1.gamma", torch.ones(DIM), "LayerScale"),
    ("reg_token", torch.zeros(1, 4, DIM), "register tokens"),
    ("rope.freqs", torch.zeros(4), "RoPE"),
])
def test_what_cannot_be_converted_is_refused_by_key(key, tensor, why, tmp_path):
    sd = fused_vit(1)
    sd[key] = tensor
    torch.save(sd, tmp_path / "vit.pth")
    with pytest.raises(ImportSourceError, match=f"{key}.*{why}"):
        import_encoder(tmp_path / "vit.pth", tmp_path / "a", ImportOptions(num_heads=HEADS))


def test_video_patch_weights_are_refused(tmp_path):
    sd = fused_vit(1)
    sd["patch_embed.proj.weight"] = torch.zeros(DIM, 3, 2, PATCH, PATCH)
    torch.save(sd, tmp_path / "vjepa.pth")
    with pytest.raises(ImportSourceError, match="patch_embed.proj.weight.*5-D"):
        import_encoder(tmp_path / "vjepa.pth", tmp_path / "a", ImportOptions(num_heads=HEADS))


def test_bad_sources_are_one_line_errors_and_write_nothing(ijepa_file, tmp_path):
    runner = CliRunner()
    torch.save({"weights": {"w": torch.zeros(2)}, "step": 1}, tmp_path / "other.pt")
    cases = {
        "unknown layout": ([str(tmp_path / "other.pt")], "top-level keys: weights, step); known layouts: hf-ijepa"),
        "missing target": (None, "no 'target_encoder'"),
        "too many levels": ([str(ijepa_file), "--num-heads", "4", "--levels", "5"], "allows 1..4 levels"),
        "corrupt": (None, "unreadable or corrupt"),
        "unsafe": (None, "not safe to load"),
        "wrong format": ([str(ijepa_file), "--from", "hf-ijepa"], "is not in the 'hf-ijepa' layout"),
    }
    state = torch.load(ijepa_file, weights_only=True)
    del state["target_encoder"]
    torch.save(state, tmp_path / "no_target.pth.tar")
    cases["missing target"] = ([str(tmp_path / "no_target.pth.tar")], cases["missing target"][1])
    (tmp_path / "corrupt.pth").write_bytes(b"PK\x03\x04 not really a zip")
    cases["corrupt"] = ([str(tmp_path / "corrupt.pth")], cases["corrupt"][1])
    torch.save({"target_encoder": {"x": torch.zeros(1)}, "bad": ImportOptions()}, tmp_path / "unsafe.pth")
    cases["unsafe"] = ([str(tmp_path / "unsafe.pth")], cases["unsafe"][1])
    for name, (args, message) in cases.items():
        out = tmp_path / f"out-{name.replace(' ', '-')}"
        result = runner.invoke(import_main, [*args, "--out", str(out)])
        assert result.exit_code == 1, (name, result.output)
        errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and message in errors[0], (name, result.output)
        assert result.output.strip().splitlines()[-1] == errors[0]  # the error is one line, and the last
        assert not out.exists(), name


def test_an_existing_output_needs_overwrite(ijepa_file, tmp_path):
    args = [str(ijepa_file), "--num-heads", "4", "--out", str(tmp_path / "a")]
    assert CliRunner().invoke(import_main, args).exit_code == 0
    before = (tmp_path / "a" / SPEC_NAME).read_text()
    result = CliRunner().invoke(import_main, args)
    assert result.exit_code == 1 and "--overwrite" in result.output
    assert (tmp_path / "a" / SPEC_NAME).read_text() == before
    result = CliRunner().invoke(import_main, [*args, "--overwrite", "--mean", "0.5", "0.5", "0.5", "--std", "1", "1",
                                              "1"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "a" / SPEC_NAME).read_text())["preprocessing"]["mean"] == [0.5, 0.5, 0.5]


def test_the_group_has_the_import_command():
    from hjepa.cli.main import cli

    assert "import" in cli.commands


def test_model_cards_and_no_download_without_asking(tmp_path, monkeypatch):
    card = find_card("ijepa-vith14-in1k")
    assert card is not None and card.url.startswith("https://dl.fbaipublicfiles.com/ijepa/")
    assert (card.architecture, card.img_size, card.licence, card.format) == (
        "vit_huge_patch14_224", 224, "CC-BY-NC-4.0", "ijepa")
    monkeypatch.setenv("HJEPA_CACHE", str(tmp_path / "cache"))

    def no_network(*args, **kwargs):
        raise AssertionError("nothing may be fetched without --download")

    monkeypatch.setattr("urllib.request.urlopen", no_network)
    result = CliRunner().invoke(import_main, ["ijepa-vith14-in1k", "--out", str(tmp_path / "a")])
    assert result.exit_code == 1
    assert "nothing was fetched" in result.output and "--download" in result.output
    assert not (tmp_path / "cache").exists() and not (tmp_path / "a").exists()
    result = CliRunner().invoke(import_main, ["no-such-model", "--out", str(tmp_path / "a")])
    assert result.exit_code == 1 and "ijepa-vith14-in1k" in result.output


def test_export_and_knn_on_an_imported_encoder(ijepa_file, tmp_path):
    from hjepa.cli.evaluate import main as eval_main
    from hjepa.cli.export import main as export_main
    from hjepa.export.manifest import read_metadata

    import_encoder(ijepa_file, tmp_path / "a", ImportOptions(num_heads=HEADS, levels=2))
    result = CliRunner().invoke(export_main, [str(tmp_path / "a"), "--level", "all", "--out", str(tmp_path / "onnx")])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "onnx" / "manifest.json").read_text())
    assert manifest["provenance"]["licence"] == "CC-BY-NC-4.0"
    metadata = read_metadata(tmp_path / "onnx" / "level1.onnx")
    assert metadata["img_size"] == SIZE and metadata["num_levels"] == 2
    assert metadata["provenance"]["licence"] == "CC-BY-NC-4.0" and metadata["provenance"]["source_format"] == "ijepa"
    report = tmp_path / "report.json"
    result = CliRunner().invoke(eval_main, ["knn", str(tmp_path / "onnx"), "--dataset", "digits", "--level", "all",
                                            "--no-cache", "--no-progress", "--out", str(report)])
    assert result.exit_code == 0, result.output
    levels = json.loads(report.read_text())["levels"]
    assert set(levels) == {"0", "1"} and all(0 <= levels[k]["knn"]["20"]["top1"] <= 100 for k in levels)


def test_runtimes_report_an_imported_encoders_provenance_and_licence(ijepa_file, tmp_path):
    """The app's header line (Runtime.provenance) names the source and licence, from the artifact and its ONNX."""
    from hjepa.cli.export import main as export_main
    from hjepa.inference import open_runtime

    import_encoder(ijepa_file, tmp_path / "a", ImportOptions(num_heads=HEADS, levels=2))
    result = CliRunner().invoke(export_main, [str(tmp_path / "a"), "--level", "all", "--out", str(tmp_path / "onnx")])
    assert result.exit_code == 0, result.output
    for source in (tmp_path / "a", tmp_path / "onnx"):
        line = open_runtime(source, backend="auto").provenance()
        assert f"imported from {ijepa_file.name} (ijepa, target_encoder encoder, epoch 7)" in line, (source, line)
        assert "licence: CC-BY-NC-4.0" in line


def test_a_trained_checkpoint_has_no_provenance_line(tiny_checkpoint):
    from hjepa.inference import open_runtime

    assert open_runtime(tiny_checkpoint, backend="auto").provenance() == ""
