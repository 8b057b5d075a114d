"""The app's computations (``Explorer``), the gallery and its cache, the CLI, and the Gradio API (gradio_client)."""

from __future__ import annotations

import dataclasses
import os
import socket
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from hjepa.inference import BACKENDS
from hjepa.serve import Explorer, ImageError, build_gallery, open_runtime
from hjepa.serve.gallery import EXAMPLES_DIR, Gallery

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
pytestmark = pytest.mark.filterwarnings(
    "ignore:.*(no_silent_downcasting|copy keyword is deprecated)"
)  # Gradio's pandas
COFFEE = EXAMPLES_DIR / "coffee.png"  # 336 x 224: the model sees its center 224 x 224 square


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def runtime(tiny_checkpoint):
    return open_runtime(tiny_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def gallery(runtime, tmp_path_factory) -> Gallery:
    return build_gallery(runtime, size=60, cache_dir=tmp_path_factory.mktemp("gallery-cache"))


@pytest.fixture(scope="module")
def views(runtime, gallery) -> Explorer:
    return Explorer(runtime, gallery, display_size=128)


def test_embed_gives_one_pca_map_per_level_with_visible_cells(views, runtime) -> None:
    maps, status, details = views.embed(str(COFFEE))
    assert len(maps) == 2
    for level, picture in zip(runtime.levels, maps, strict=True):
        assert picture.shape == (128, 128, 3) and picture.dtype == np.uint8
        grid = runtime.metadata.grid(level)
        # Nearest upscaling: the picture is the grid of cells, one flat colour each.
        colours = np.unique(picture.reshape(-1, 3), axis=0)
        assert 2 <= len(colours) <= grid[0] * grid[1]
        assert len(details["levels"][str(level)]["pooled"]) == 32
    _, pooled = runtime.embed([str(COFFEE)], 1)
    np.testing.assert_allclose(details["levels"]["1"]["pooled"], pooled[0], atol=1e-5)
    assert "torch[cpu]" in status and " ms" in status


def test_masks_are_drawn_and_follow_the_seed(views) -> None:
    plain = np.asarray(Image.open(COFFEE).convert("RGB"))
    multiblock, hierarchical, stats = views.masks(plain, seed=0)
    assert multiblock.shape == hierarchical.shape == (128, 128, 3)
    from hjepa.inference.runtimes.images import center_crop_resize

    assert not np.array_equal(multiblock, center_crop_resize(plain, 128))
    assert set(stats) == {"multiblock", "hierarchical"} and stats["hierarchical"]["grid"] == [4, 4]
    assert stats["hierarchical"]["overlap"] == 0
    again = views.masks(plain, seed=0)
    assert np.array_equal(again[1], hierarchical)
    assert any(not np.array_equal(views.masks(plain, seed=s)[1], hierarchical) for s in range(1, 6))


def test_similarity_follows_the_click_and_the_level(views) -> None:
    # x = 56 + 224 * 0.9 is in the last column of the crop, y = 224 * 0.1 in the first row.
    overlay, status = views.similarity(str(COFFEE), 0, x=56 + 201, y=22)
    assert overlay.shape == (128, 128, 3)
    assert "row 0, col 3" in status and "4x4" in status
    _, status = views.similarity(str(COFFEE), 1, x=56 + 201, y=22)
    assert "row 0, col 1" in status and "2x2" in status
    _, status = views.similarity(str(COFFEE), 1)  # no click yet: the center cell
    assert "row 1, col 1" in status
    with pytest.raises(ImageError, match="outside the center square"):
        views.similarity(str(COFFEE), 0, x=10, y=100)
    with pytest.raises(ValueError, match="available levels"):
        views.similarity(str(COFFEE), 5, x=100, y=100)


def test_neighbours_find_the_query_itself_first(views, gallery) -> None:
    query = gallery.images[7]
    items, status = views.neighbours(query, 0, k=5)
    assert len(items) == 5
    thumb, caption = items[0]
    assert thumb.shape[0] == 96  # the 8 px digit blown up for display
    label = gallery.classes[gallery.labels[7]]
    assert caption.startswith(f"{label} · 1.000") or caption.startswith(f"{label} · 0.999")
    assert "digits test split" in status


def test_gallery_features_are_cached_on_disk(runtime, tmp_path, monkeypatch) -> None:
    first = build_gallery(runtime, size=20, cache_dir=tmp_path)
    features = first.features(runtime, 0)
    assert features.shape == (20, 32)
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-5)
    assert len(list(tmp_path.glob("digits_test_level0_*.safetensors"))) == 1
    second = build_gallery(runtime, size=20, cache_dir=tmp_path)

    def refuse(*args, **kwargs):
        raise AssertionError("the gallery was embedded again instead of read from the cache")

    monkeypatch.setattr(runtime, "embed", refuse)
    np.testing.assert_allclose(second.features(runtime, 0), features, atol=1e-6)


def test_gallery_falls_back_to_the_examples_without_the_dataset(runtime, tmp_path) -> None:
    original = runtime.metadata
    try:
        runtime.metadata = dataclasses.replace(original, dataset="imagefolder")
        gallery = build_gallery(runtime, data_dir=str(tmp_path / "nowhere"))
    finally:
        runtime.metadata = original
    assert len(gallery) == len(list(EXAMPLES_DIR.glob("*.png"))) >= 3
    assert gallery.description.startswith("shipped examples")
    assert sorted(gallery.classes) == sorted(p.stem for p in EXAMPLES_DIR.glob("*.png"))


def test_cli_help_and_errors(tmp_path) -> None:
    from hjepa.cli.serve import BACKEND_CHOICES, main

    assert tuple(BACKEND_CHOICES) == BACKENDS
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--gallery", "--gallery-size", "--backend", "--max-upload-mb"):
        assert option in result.output
    assert "--share" not in result.output and "127.0.0.1" in result.output
    result = CliRunner().invoke(main, [str(tmp_path / "missing.pt")])
    assert result.exit_code == 1 and "does not exist" in result.output
    (tmp_path / "notes.txt").write_text("x")
    result = CliRunner().invoke(main, [str(tmp_path / "notes.txt")])
    assert result.exit_code == 1 and "not a model this app can serve" in result.output


@pytest.fixture(scope="module")
def served(runtime, gallery):
    """The app on a free local port (uploads limited to 50 KB so the limit is testable), closed afterwards."""
    from hjepa.serve.app import build_app, launch_app

    demo = build_app(runtime, gallery, max_upload_mb=0.05, display_size=128)
    url = launch_app(demo, host="127.0.0.1", port=free_port(), max_upload_mb=0.05, block=False, quiet=True)
    yield url
    demo.close()


def test_gradio_client_calls_every_endpoint(served, tmp_path) -> None:
    from gradio_client import Client, handle_file

    assert served.startswith("http://127.0.0.1:")
    client = Client(served, verbose=False)
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/embed", "/masks", "/similarity", "/neighbours"} <= set(endpoints)
    small = tmp_path / "small.png"
    Image.open(COFFEE).convert("RGB").resize((96, 64)).save(small)
    level0, level1, status, details = client.predict(handle_file(str(small)), api_name="/embed")
    assert Image.open(level0).size == (128, 128) and Image.open(level1).size == (128, 128)
    assert "torch[cpu]" in status and set(details["levels"]) == {"0", "1"}
    multiblock, hierarchical, stats = client.predict(handle_file(str(small)), 3, api_name="/masks")
    assert Image.open(hierarchical).size == (128, 128) and "context tokens" in stats
    overlay, status = client.predict(handle_file(str(small)), 1, 79.0, 5.0, api_name="/similarity")
    assert Image.open(overlay).size == (128, 128) and "row 0, col 1" in status
    hits, status = client.predict(handle_file(str(small)), 0, 4, api_name="/neighbours")
    assert len(hits) == 4 and all(" · " in hit["caption"] for hit in hits)
    # Not an image, and too large: a message the caller can read, not a crash.
    bogus = tmp_path / "bogus.png"
    bogus.write_text("this is not a picture")
    with pytest.raises(Exception, match="not an image this app can read"):
        client.predict(handle_file(str(bogus)), api_name="/embed")
    with pytest.raises(Exception, match="(?i)size|large|limit"):
        client.predict(handle_file(str(COFFEE)), api_name="/embed")  # 140 KB > 50 KB
    # The app still answers afterwards.
    assert client.predict(handle_file(str(small)), 0, 2, api_name="/neighbours")[0]


def test_nothing_heavy_runs_at_import() -> None:
    import subprocess
    import sys

    code = "import sys, hjepa.serve, hjepa.cli.serve; print('gradio' in sys.modules, 'onnxruntime' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
    )
    assert out.stdout.strip() == "False False"


def test_api_calls_with_missing_numbers_get_a_message_naming_the_input(runtime, gallery, tmp_path) -> None:
    # Through the HTTP API a client can send null where the UI always sends a number; int(None) used to answer.
    import gradio as gr

    from hjepa.serve.app import build_app

    demo = build_app(runtime, gallery)
    by_name = {block_fn.api_name: block_fn.fn for block_fn in demo.fns.values() if block_fn.api_name}
    picture = tmp_path / "picture.png"
    Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(picture)
    for name, args, message in (("similarity", (str(picture), None, 10.0, 10.0), "level must be a whole number"),
                                ("neighbours", (str(picture), 0, None), "k must be a whole number"),
                                ("masks", (str(picture), "x"), "seed must be a whole number")):
        with pytest.raises(gr.Error, match=message):
            by_name[name](*args)
