"""``evaluate`` and ``resolve_source``: checkpoint, export and random-init sources on digits, the feature cache,
preprocessing from the source's metadata, and the errors a user can hit."""

import json

import pytest
import torch
from safetensors.torch import load_file

from hjepa.data import EvalTransform, build_dataset, dataset_stats
from hjepa.errors import OptionError
from hjepa.evaluation.run import evaluate
from hjepa.evaluation.sources import resolve_source
from hjepa.inference.artifacts.levels import parse_levels
from hjepa.inference.runtimes.runtime import RuntimeUnavailableError
from hjepa.train.checkpoint import load_model


@pytest.fixture(scope="module")
def exported_level1(tiny_checkpoint, tmp_path_factory):
    """Level 1 of the tiny checkpoint exported (and verified) by ``hjepa.export``."""
    from hjepa.export import export

    out = tmp_path_factory.mktemp("export") / "tiny"
    export(tiny_checkpoint, 1, out)
    return out


def test_checkpoint_report_and_cache_hit_on_second_run(tiny_checkpoint, tmp_path):
    cache_dir = tmp_path / "cache"
    kwargs = dict(dataset="digits", protocols=("knn",), cache_dir=cache_dir, ks=[5, 20], progress=False)
    first = evaluate(tiny_checkpoint, out=tmp_path / "report.json", **kwargs)

    assert first["backend"].startswith("torch") and first["kind"] == "checkpoint"
    assert first["splits"] == {"train": 1437, "test": 360} and first["num_classes"] == 10
    assert sorted(first["levels"]) == ["0", "1"]
    for level in ("0", "1"):
        knn = first["levels"][level]["knn"]
        assert sorted(knn) == ["20", "5"]
        assert 10.0 < knn["20"]["top1"] <= knn["20"]["top5"] <= 100.0  # far above chance (10 %) even untrained
    files = {(lv, s): info["file"] for lv, splits in first["features"].items() for s, info in splits.items()}
    assert {info["cache"] for splits in first["features"].values() for info in splits.values()} == {"miss"}
    mtimes = {where: (cache_dir / file.split("/")[-1]).stat().st_mtime_ns for where, file in files.items()}
    assert json.loads((tmp_path / "report.json").read_text()) == first

    second = evaluate(tiny_checkpoint, **kwargs)
    assert {info["cache"] for splits in second["features"].values() for info in splits.values()} == {"hit"}
    assert {(lv, s): info["file"] for lv, splits in second["features"].items() for s, info in splits.items()} == files
    assert {where: (cache_dir / f.split("/")[-1]).stat().st_mtime_ns for where, f in files.items()} == mtimes
    assert second["levels"] == first["levels"]
    assert second["timings"]["extract_s"] < first["timings"]["extract_s"]


def test_features_use_the_checkpoints_size_and_normalisation(tiny_checkpoint, tmp_path):
    report = evaluate(tiny_checkpoint, "digits", levels=1, protocols=("knn",), cache_dir=tmp_path, progress=False,
                      train_limit=50, test_limit=20)
    cached = load_file(report["features"]["1"]["test"]["file"])
    model, cfg, _ = load_model(tiny_checkpoint, "cpu")
    data = build_dataset("digits", "test")
    mean, std = dataset_stats(cfg.data.dataset)
    keep = torch.linspace(0, len(data) - 1, 20).round().long()
    images, labels = data.tensors()
    with torch.no_grad():
        _, expected = model.extract_features(EvalTransform(cfg.model.img_size, mean, std)(images[keep]), 1)
    torch.testing.assert_close(cached["features"], expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(cached["labels"], labels[keep])
    assert report["splits"] == {"train": 50, "test": 20} and report["dataset_sizes"] == {"train": 1437, "test": 360}


def test_normalisation_comes_from_the_source_not_the_dataset(tmp_path):
    config = tmp_path / "cifar-stats.yaml"
    config.write_text("model: {encoder: custom, embed_dim: 32, depth: 1, num_heads: 2, img_size: 16, patch_size: 4,"
                      " num_levels: 2}\ndata: {dataset: cifar100}\n")
    source = resolve_source(random_init=str(config), device="cpu")
    cifar_mean, cifar_std = dataset_stats("cifar100")
    assert dataset_stats("digits")[0] != cifar_mean  # otherwise this test could not tell them apart
    assert source.transform().mean.flatten().tolist() == pytest.approx(cifar_mean)

    # A model trained with CIFAR statistics, evaluated on digits, sees digits normalised as CIFAR images were.
    report = evaluate(source, "digits", levels=0, protocols=("knn",), cache_dir=tmp_path / "cache", ks=[5],
                      train_limit=30, test_limit=10, progress=False)
    images, _ = build_dataset("digits", "test").tensors()
    keep = torch.linspace(0, len(images) - 1, 10).round().long()
    with torch.no_grad():
        _, expected = source.runtime.model.extract_features(EvalTransform(16, cifar_mean, cifar_std)(images[keep]), 0)
    cached = load_file(report["features"]["0"]["test"]["file"])["features"]
    torch.testing.assert_close(cached, expected, atol=1e-5, rtol=1e-5)
    assert report["model"]["mean"] == pytest.approx(cifar_mean) and report["model"]["img_size"] == 16


def test_random_init_baseline_has_a_stable_hash_and_a_report(tiny_checkpoint, tmp_path):
    first = resolve_source(random_init="digits-debug", device="cpu")
    second = resolve_source(random_init="digits-debug", device="cpu")
    assert first.source_hash == second.source_hash != resolve_source(tiny_checkpoint, device="cpu").source_hash
    assert first.kind == "random-init" and first.levels == [0, 1]
    report = evaluate(None, "digits", random_init="digits-debug", protocols=("knn", "linear"), cache_dir=None,
                      ks=[10], progress=False, probe_epochs=5, train_limit=400)
    assert report["source"] == "random-init:digits-debug"
    assert {info["cache"] for splits in report["features"].values() for info in splits.values()} == {"off"}
    for results in report["levels"].values():
        assert 0.0 <= results["knn"]["10"]["top1"] <= 100.0 and results["linear"]["epochs"] == 5


def test_exported_onnx_gives_the_checkpoints_accuracy(tiny_checkpoint, exported_level1, tmp_path):
    kwargs = dict(dataset="digits", levels=1, protocols=("knn", "linear"), cache_dir=tmp_path, ks=[10, 20],
                  progress=False, probe_epochs=30)
    from_checkpoint = evaluate(tiny_checkpoint, **kwargs)
    from_directory = evaluate(exported_level1, **kwargs)
    from_file = evaluate(exported_level1 / "level1.onnx", **kwargs)
    assert from_directory["backend"].startswith("onnxruntime") and from_file["kind"] == "onnx"
    assert len({from_checkpoint["source_hash"], from_directory["source_hash"], from_file["source_hash"]}) == 3
    torch.testing.assert_close(
        load_file(from_file["features"]["1"]["train"]["file"])["features"],
        load_file(from_checkpoint["features"]["1"]["train"]["file"])["features"], atol=1e-4, rtol=1e-4,
    )
    for report in (from_directory, from_file):
        assert report["levels"]["1"]["knn"] == from_checkpoint["levels"]["1"]["knn"]
        assert report["levels"]["1"]["linear"]["top1"] == from_checkpoint["levels"]["1"]["linear"]["top1"]


def test_level_missing_from_the_source_is_named(tiny_checkpoint, exported_level1):
    source = resolve_source(tiny_checkpoint, device="cpu")
    assert parse_levels("all", source.levels) == [0, 1] and parse_levels("1,0,1", source.levels) == [1, 0]
    with pytest.raises(ValueError, match=r"level 2 is not in .*available levels: \[0, 1\]"):
        parse_levels(2, source.levels, source.name)
    with pytest.raises(ValueError, match="not a level number"):
        parse_levels("top", source.levels)
    with pytest.raises(ValueError, match=r"level 0 is not in .*level1.onnx; available levels: \[1\]"):
        evaluate(exported_level1 / "level1.onnx", "digits", levels=0, cache_dir=None, progress=False)


def test_bad_sources_and_data_fail_with_the_path_named(tiny_checkpoint, tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.pt does not exist"):
        evaluate(tmp_path / "nothing.pt", "digits", cache_dir=None, progress=False)
    with pytest.raises(ValueError, match="either a SOURCE"):
        resolve_source(None)
    from hjepa.data import DataError

    missing = tmp_path / "no-fashion"
    with pytest.raises(DataError, match=str(missing)):
        evaluate(tiny_checkpoint, "fashion-mnist", data_dir=str(missing), cache_dir=None, progress=False)
    with pytest.raises(DataError, match="limit must be positive"):
        evaluate(tiny_checkpoint, "digits", train_limit=0, cache_dir=None, progress=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given on a machine without a GPU")
def test_engine_without_gpu_says_what_is_missing(tmp_path):
    engine = tmp_path / "level0.engine"
    engine.write_bytes(b"not an engine")
    with pytest.raises(RuntimeUnavailableError, match="needs an NVIDIA GPU"):
        resolve_source(engine)


def test_logreg_classifier_is_reported_under_its_name(tiny_checkpoint, tmp_path):
    report = evaluate(tiny_checkpoint, "digits", levels="0", protocols=("linear",), classifier="logreg",
                      cache_dir=tmp_path, train_limit=300, progress=False)
    results = report["levels"]["0"]
    assert "logreg" in results and "linear" not in results and "knn" not in results
    assert 10.0 < results["logreg"]["top1"] <= results["logreg"]["top5"] <= 100.0


def test_grid_feature_is_the_level_grid_flattened_and_cached_apart(tiny_checkpoint, tmp_path):
    """``feature="grid"``: each image's level-k cells in raster order, flattened; its cache entry is its own, and the
    pooled entry written before it is still hit."""
    kwargs = dict(protocols=("knn",), cache_dir=tmp_path, ks=[5], progress=False, train_limit=60, test_limit=20)
    pooled = evaluate(tiny_checkpoint, "digits", levels="0,1", **kwargs)
    grid = evaluate(tiny_checkpoint, "digits", levels="0,1", feature="grid", **kwargs)
    again = evaluate(tiny_checkpoint, "digits", levels="0,1", **kwargs)

    model, cfg, _ = load_model(tiny_checkpoint, "cpu")
    images, _ = build_dataset("digits", "test").tensors()
    keep = torch.linspace(0, len(images) - 1, 20).round().long()
    side = cfg.model.img_size // cfg.model.patch_size
    for level in (0, 1):
        with torch.no_grad():
            tokens, mean = model.extract_features(EvalTransform(cfg.model.img_size, *dataset_stats("digits"))(
                images[keep]), level)
        cells = (side // 2**level) ** 2
        assert tokens.shape[1] == cells > 1  # a grid, not one cell: pooled and grid differ
        grid_file = load_file(grid["features"][str(level)]["test"]["file"])["features"]
        torch.testing.assert_close(grid_file, tokens.flatten(1), atol=1e-5, rtol=1e-5)
        assert grid["features"][str(level)]["test"]["dim"] == cells * mean.shape[1]
        assert pooled["features"][str(level)]["test"]["dim"] == mean.shape[1]
        assert grid["features"][str(level)]["test"]["file"] != pooled["features"][str(level)]["test"]["file"]
    assert grid["protocol"]["feature"] == "grid" and pooled["protocol"]["feature"] == "pooled"
    assert {info["cache"] for splits in again["features"].values() for info in splits.values()} == {"hit"}


def test_unknown_feature_is_named(tiny_checkpoint):
    with pytest.raises(OptionError, match="unknown feature 'cls'; valid: pooled, grid"):
        evaluate(tiny_checkpoint, "digits", protocols=("knn",), feature="cls", cache_dir=None, progress=False)
