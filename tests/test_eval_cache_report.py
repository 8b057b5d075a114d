"""Feature cache (keys, hits, atomic writes, corrupt files) and evaluation reports (table, JSON round trip)."""

import hashlib
import json

import pytest
import torch

from hjepa.evaluation.report import build_report, format_table, read_report, report_rows, write_report
from hjepa.inference.artifacts.hashing import file_sha256
from hjepa.inference.features.cache import FeatureCache


def make_features(rows=6, dim=4):
    return torch.randn(rows, dim, generator=torch.Generator().manual_seed(rows)), torch.arange(rows) % 3


def test_miss_then_hit_returns_the_saved_tensors(tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    key = cache.key("abc123", level=1, dataset="cifar100", split="train")
    calls = []

    def compute():
        calls.append(1)
        return make_features()

    features, labels, hit = cache.get_or_compute(key, compute)
    assert not hit and len(calls) == 1 and cache.path(key).is_file()
    cached_features, cached_labels, hit = cache.get_or_compute(key, compute)
    assert hit and len(calls) == 1
    assert torch.equal(cached_features, features) and torch.equal(cached_labels, labels)
    assert cached_labels.dtype == torch.long
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f"{key}.safetensors"]  # no temporary files left


def test_keys_differ_by_every_field_and_are_file_safe(tmp_path):
    cache = FeatureCache(tmp_path)
    base = {"source_hash": "abc", "level": 0, "dataset": "image/net 100", "split": "train", "extra": ""}
    key = cache.key(**base)
    assert key == cache.key(**base)
    assert "/" not in key and " " not in key and key.startswith("image-net-100_train_level0_")
    variants = [{"level": 1}, {"split": "val"}, {"source_hash": "abd"}, {"dataset": "image-net-100"}, {"extra": "224"}]
    keys = {cache.key(**{**base, **change}) for change in variants}
    assert len(keys) == len(variants) and key not in keys


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_file_is_a_miss_and_is_overwritten(tmp_path, damage):
    cache = FeatureCache(tmp_path)
    key = cache.key("abc", 0, "cifar100", "test")
    features, labels = make_features()
    path = cache.save(key, features, labels)
    data = path.read_bytes()
    path.write_bytes(
        {"garbage": b"not a safetensors file at all", "truncated": data[: len(data) // 2], "empty": b""}[damage]
    )
    with pytest.warns(UserWarning, match="corrupt feature cache file"):
        assert cache.load(key) is None
    with pytest.warns(UserWarning):
        _, _, hit = cache.get_or_compute(key, make_features)
    assert not hit
    loaded = cache.load(key)
    assert loaded is not None and torch.equal(loaded[0], features)


def test_file_copied_under_another_key_is_rejected(tmp_path):
    cache = FeatureCache(tmp_path)
    train_key, test_key = cache.key("abc", 0, "d", "train"), cache.key("abc", 0, "d", "test")
    cache.save(train_key, *make_features())
    cache.path(test_key).write_bytes(cache.path(train_key).read_bytes())
    with pytest.warns(UserWarning, match="does not match key"):
        assert cache.load(test_key) is None


def test_save_rejects_mismatched_shapes_and_bad_keys(tmp_path):
    cache = FeatureCache(tmp_path)
    with pytest.raises(ValueError, match=r"features \[N, D\] and labels \[N\]"):
        cache.save("k", torch.zeros(4, 2), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="invalid cache key"):
        cache.path("../escape")
    with pytest.raises(ValueError, match="source_hash is empty"):
        cache.key("", 0, "d", "train")


def test_file_sha256_streams_to_the_same_digest(tmp_path):
    path = tmp_path / "weights.bin"
    payload = bytes(range(256)) * 41
    path.write_bytes(payload)
    assert file_sha256(path, chunk_bytes=7) == hashlib.sha256(payload).hexdigest()
    with pytest.raises(FileNotFoundError, match="missing.bin"):
        file_sha256(tmp_path / "missing.bin")


def sample_report():
    knn = {10: {"top1": 41.234, "top5": 70.0}, 20: {"top1": 42.5, "top5": 71.25}}  # knn_evaluate uses int keys
    linear = {"top1": 45.0, "top5": 75.5, "best_lr": 0.01, "val_top1_per_lr": {0.01: 44.0, 0.1: 40.0}}
    levels = {1: {"knn": {20: {"top1": 30.0, "top5": float("nan")}}}, 0: {"knn": knn, "linear": linear}}
    return build_report(
        "runs/x/last.safetensors", "cifar100", {"train": 500, "test": 100}, levels, timings={"knn_s": torch.tensor(1.5)}
    )


def test_report_json_round_trip(tmp_path):
    report = sample_report()
    assert list(report["levels"]) == ["0", "1"]  # sorted, string keys
    assert report["levels"]["1"]["knn"]["20"]["top5"] is None  # NaN is not JSON
    assert report["timings"]["knn_s"] == 1.5
    path = write_report(tmp_path / "out" / "report.json", report)
    assert read_report(path) == report
    assert json.loads(path.read_text())["levels"]["0"]["linear"]["val_top1_per_lr"] == {"0.01": 44.0, "0.1": 40.0}
    assert [p.name for p in path.parent.iterdir()] == ["report.json"]


def test_report_rows_and_table_hold_the_numbers():
    rows = report_rows(sample_report())
    assert rows[0] == {
        "level": 0,
        "knn@10 top1": 41.234,
        "knn@10 top5": 70.0,
        "knn@20 top1": 42.5,
        "knn@20 top5": 71.25,
        "linear top1": 45.0,
        "linear top5": 75.5,
    }
    assert rows[1] == {"level": 1, "knn@20 top1": 30.0, "knn@20 top5": None}
    columns = ["level", "knn@10 top1", "knn@20 top1", "knn@20 top5", "linear top1"]
    lines = format_table(rows, columns).splitlines()
    assert lines[0].split("  ")[0] == "level" and "knn@20 top5" in lines[0]
    assert set(lines[1]) == {"-", " "}
    assert lines[2].split() == ["0", "41.23", "42.50", "71.25", "45.00"]
    assert lines[3].split() == ["1", "-", "30.00", "-", "-"]
    # Right-aligned numbers: every value ends where its header ends.
    header_end = lines[0].index("knn@20 top1") + len("knn@20 top1")
    assert lines[2][header_end - 5 : header_end] == "42.50" and lines[3][header_end - 5 : header_end] == "30.00"


def test_table_defaults_to_all_columns_and_left_aligns_text():
    table = format_table([{"name": "a", "value": 1.0}, {"name": "long name", "extra": 3}])
    lines = table.splitlines()
    assert lines[0].split() == ["name", "value", "extra"]
    assert lines[2].startswith("a         ") and lines[3].split() == ["long", "name", "-", "3"]
