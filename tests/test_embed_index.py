"""hjepa-embed --index (exact vs IVF-PQ by a row threshold) and hjepa-serve's gallery reading an embed folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
from embed_helpers import make_folder, read_rows

from hjepa.embed import EmbedOptions, embed_collection
from hjepa.embed.index import build_index, ivfpq_parameters
from hjepa.inference.features.collection import feature_matrix, l2_normalise, load_index, read_columns

pytest.importorskip("faiss")


@pytest.fixture(scope="module")
def digits_index(tiny_checkpoint, tmp_path_factory):
    """The digits test split (360 images) embedded at both levels; level indexes IVF-PQ (threshold lowered)."""
    out = tmp_path_factory.mktemp("digits") / "out"
    embed_collection(EmbedOptions(str(tiny_checkpoint), "digits", str(out), split="test", index=True,
                                  exact_index_max_rows=100, workers=0, progress=False))
    return out


def test_index_kind_follows_the_threshold(digits_index, tmp_path) -> None:
    record = json.loads((digits_index / "index" / "index.json").read_text())
    assert record["rows"] == 360 and record["exact_max_rows"] == 100
    entry = record["levels"]["0"]
    assert entry["kind"] == "ivfpq" and entry["factory"].startswith("IVF") and entry["nprobe"] >= 1
    manifest = json.loads((digits_index / "manifest.json").read_text())
    assert manifest["index"]["levels"]["1"]["kind"] == "ivfpq"
    features = l2_normalise(np.random.default_rng(0).normal(size=(50, 32)).astype(np.float32))
    exact, record = build_index(features, exact_max_rows=50)
    assert record["kind"] == "exact" and exact.ntotal == 50
    params = ivfpq_parameters(2_000_000, 384)
    assert 384 % params["m"] == 0 and params["nbits"] == 8 and params["nlist"] == int(4 * np.sqrt(2_000_000))


def test_ivfpq_recall_against_exact_search(digits_index) -> None:
    """The approximate index finds far more of the exact top 10 than chance (10 / 360; 3-bit codes at this size:
    the benchmark measures recall at a realistic size), ten distinct valid rows per query."""
    import faiss

    table = read_columns(digits_index, ["id", "level0"])
    features = l2_normalise(feature_matrix(table.column("level0")))
    approximate = load_index(digits_index, 0)
    assert approximate.kind == "ivfpq" and approximate.ids == table.column("id").to_pylist()
    exact = faiss.IndexFlatIP(features.shape[1])
    exact.add(features)
    queries = features[::6]
    _, truth = exact.search(queries, 10)
    _, found = approximate.search(queries, 10)
    recall = np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth, found, strict=True)])
    assert recall >= 0.2, recall
    assert all(len(set(hits)) == 10 and 0 <= hits.min() and hits.max() < 360 for hits in found)


def test_serve_gallery_reads_an_embed_folder(tiny_checkpoint, tmp_path, monkeypatch) -> None:
    """``--gallery DIR`` of an embed output: the index is searched (nothing re-embedded), hits shown by path."""
    from hjepa.inference import open_runtime
    from hjepa.inference.runtimes.images import read_image
    from hjepa.serve import Explorer, build_gallery
    from hjepa.serve.collection_gallery import CollectionGallery

    root = tmp_path / "pictures"
    ids = make_folder(root, count=12)
    out = tmp_path / "out"
    runtime = open_runtime(tiny_checkpoint, device="cpu")
    for indexed in (True, False):
        target = out / str(indexed)
        embed_collection(EmbedOptions(str(tiny_checkpoint), str(root), str(target), index=indexed, workers=0,
                                      progress=False, max_pixels=20_000))
        gallery = build_gallery(runtime, str(target))
        assert isinstance(gallery, CollectionGallery) and len(gallery) == len(ids)
        assert ("exact" in gallery.description) and (("no index" in gallery.description) != indexed)
        monkeypatch.setattr(type(runtime), "embed", lambda *a, **k: pytest.fail("the gallery was re-embedded"))
        for level in runtime.levels:
            gallery.warm(runtime, level)
        monkeypatch.undo()
        stored = read_rows(target, ["level1"])
        query = ids[5]
        hits = gallery.neighbours(runtime, np.asarray(stored[query]["level1"]), level=1, k=4)
        assert hits[0].label == query and hits[0].similarity == pytest.approx(1.0, abs=1e-5)
        assert np.array_equal(hits[0].image, read_image(root / query))  # shown from its path
        assert [h.similarity for h in hits] == sorted((h.similarity for h in hits), reverse=True)
    items, status = Explorer(runtime, gallery, display_size=64).neighbours(str(root / ids[2]), level=0, k=3)
    assert len(items) == 3 and items[0][1].startswith(ids[2]) and "neighbours at level 0" in status
