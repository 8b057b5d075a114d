"""Serving faults: pictures that decode to gigabytes, concurrent requests for the same picture, and ONNX files whose
graph disagrees with their metadata."""

from __future__ import annotations

import concurrent.futures
import os
import socket
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from PIL import Image

from hjepa.serve import Explorer, ImageError, RuntimeSourceError, open_runtime

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
pytestmark = pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword is deprecated)")


# gradio_client's requests (config, upload, download) time out after httpx's default 5 s; on a busy 2-core machine
# 18 clients starting at once can wait longer than that for the server, which is slowness, not a wrong answer.
SLOW_MACHINE = {"timeout": 120}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def runtime(tiny_checkpoint):
    return open_runtime(tiny_checkpoint, device="cpu")


def huge_png_header(path: Path, width: int, height: int) -> Path:
    """A valid PNG header declaring ``width x height`` pixels, followed by almost no data: only decoding it fails."""
    Image.new("L", (width, height)).save(path)  # zeros compress to a few hundred kB
    data = path.read_bytes()
    path.write_bytes(data[:4096])
    return path


def test_pixel_limit_is_checked_before_decoding(runtime, tmp_path) -> None:
    views = Explorer(runtime, display_size=64)
    # 13000 x 13000 (the 493 kB PNG): the header alone is refused, by size, with the limit named; a picture
    # that were decoded would instead fail as truncated.
    big = huge_png_header(tmp_path / "big.png", 13000, 13000)
    with pytest.raises(ImageError, match=r"big\.png is 13000 x 13000 pixels \(169\.0 megapixels\), over .* 40 mega"):
        views.embed(str(big))
    small = Explorer(runtime, display_size=64, max_pixels=1_000_000)
    Image.fromarray(np.full((800, 1500, 3), 90, np.uint8)).save(tmp_path / "wide.png")
    with pytest.raises(ImageError, match="1500 x 800 pixels .* limit of 1 megapixels"):
        small.masks(str(tmp_path / "wide.png"))
    Image.fromarray(np.full((600, 900, 3), 90, np.uint8)).save(tmp_path / "fits.png")
    assert small.embed(str(tmp_path / "fits.png"))[0][0].shape == (64, 64, 3)


def test_large_jpegs_are_decoded_reduced_and_clicks_keep_their_frame(runtime, tmp_path) -> None:
    # 3000 x 4000 (12 megapixels) under a 1-megapixel limit: JPEG decodes it at 1/8 scale (375 x 500) inside the
    # decoder, so it fits; a PNG of the same size does not.
    rng = np.random.default_rng(0)
    pixels = np.repeat(np.repeat(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8), 100, 0), 100, 1)
    Image.fromarray(pixels).save(tmp_path / "photo.jpg", quality=90)
    views = Explorer(runtime, display_size=64, max_pixels=1_000_000)
    from hjepa.inference.runtimes.images import decode_image

    array, full = decode_image(tmp_path / "photo.jpg", max_pixels=1_000_000, min_side=views.min_side)
    assert full == (3000, 4000) and array.shape == (375, 500, 3)
    maps, _, _ = views.embed(str(tmp_path / "photo.jpg"))
    assert len(maps) == 2
    # The click is in the full picture's pixels: x = 500 + 3000 * 0.9 is the last column of the center square.
    _, status = views.similarity(str(tmp_path / "photo.jpg"), 0, x=500 + 2700, y=300)
    assert "row 0, col 3" in status
    with pytest.raises(ImageError, match="outside the center square"):
        views.similarity(str(tmp_path / "photo.jpg"), 0, x=200, y=1500)
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    with pytest.raises(ImageError, match="megapixels"):
        views.embed(str(tmp_path / "photo.png"))


def test_every_model_event_shares_one_bounded_queue(runtime) -> None:
    from hjepa.serve.app import build_app

    demo = build_app(runtime, None, concurrency=3)
    light = ("select_point", "load_example")  # a click's coordinates, an example's file: no model work
    model_events = [fn for fn in demo.fns.values() if fn.name not in light]
    assert len(model_events) >= 10
    assert {(fn.concurrency_id, fn.concurrency_limit) for fn in model_events} == {("model", 3)}


def test_two_answers_with_the_same_picture_never_share_a_file(runtime, tmp_path) -> None:
    # Gradio names a returned picture's file after its bytes and writes it in place: two requests answering with the
    # same picture wrote and served one file together.
    import gradio as gr

    from hjepa.serve.app import build_app

    picture = tmp_path / "same.png"
    Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(picture)
    demo = build_app(runtime, None, display_size=64)
    embed = next(fn for fn in demo.fns.values() if fn.api_name == "embed")
    first, second = embed.fn(str(picture)), embed.fn(str(picture))
    component = next(block for block in embed.outputs if isinstance(block, gr.Image))
    paths = [component.postprocess(answer[0]).path for answer in (first, second)]
    assert paths[0] != paths[1]
    assert np.array_equal(np.asarray(Image.open(paths[0])), np.asarray(Image.open(paths[1])))


@pytest.fixture(scope="module")
def served(runtime):
    from hjepa.serve.app import build_app, launch_app

    demo = build_app(runtime, None, display_size=64, max_megapixels=1.0, concurrency=2)
    url = launch_app(demo, host="127.0.0.1", port=free_port(), block=False, quiet=True)
    yield url
    demo.close()


def test_concurrent_calls_on_repeated_pictures_all_get_right_answers(served, tmp_path) -> None:
    from gradio_client import Client, handle_file

    rng = np.random.default_rng(1)
    pictures = []
    for index in range(3):
        path = tmp_path / f"picture{index}.png"
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(path)
        pictures.append(path)
    client = Client(served, verbose=False)
    expected = {}
    for path in pictures:  # one at a time first: the right answers
        level0, level1, _, details = client.predict(handle_file(str(path)), api_name="/embed")
        expected[path] = (np.asarray(Image.open(level0)), np.asarray(Image.open(level1)), details["levels"])

    def ask(index: int) -> str:
        path = pictures[index % len(pictures)]
        try:
            client = Client(served, verbose=False, httpx_kwargs=SLOW_MACHINE)
            level0, level1, _, details = client.predict(handle_file(str(path)), api_name="/embed")
            want = expected[path]
            right = (np.array_equal(np.asarray(Image.open(level0)), want[0])
                     and np.array_equal(np.asarray(Image.open(level1)), want[1]) and details["levels"] == want[2])
            return "right" if right else "wrong picture"
        except Exception as exc:  # a dropped connection, a cut file: a wrong answer too
            return f"{type(exc).__name__}: {exc}"[:200]

    with concurrent.futures.ThreadPoolExecutor(18) as pool:
        answers = list(pool.map(ask, range(18)))
    assert answers == ["right"] * 18, answers


def test_a_picture_over_the_pixel_limit_is_a_message_through_the_api(served, tmp_path) -> None:
    from gradio_client import Client, handle_file

    path = tmp_path / "poster.png"
    Image.fromarray(np.full((1000, 1200, 3), 200, np.uint8)).save(path)  # 1.2 megapixels, 4 kB
    with pytest.raises(Exception, match="1200 x 1000 pixels .* limit of 1 megapixels"):
        Client(served, verbose=False).predict(handle_file(str(path)), api_name="/embed")


@pytest.fixture(scope="module")
def mismatched_onnx(tiny_checkpoint, tmp_path_factory) -> Path:
    """Level 0 exported at 16 px, its metadata then edited to say 32 px (and the 8x8 grid that would go with it)."""
    from hjepa.export import export

    folder = tmp_path_factory.mktemp("mismatch")
    export(tiny_checkpoint, 0, folder / "exp")
    model = onnx.load(str(folder / "exp" / "level0.onnx"))
    for prop in model.metadata_props:
        if prop.key == "img_size":
            prop.value = "32"
        if prop.key == "grid":
            prop.value = "[8, 8]"
    onnx.save(model, str(folder / "edited.onnx"))
    return folder / "edited.onnx"


def test_onnx_graph_disagreeing_with_its_metadata_is_refused_when_opened(mismatched_onnx) -> None:
    with pytest.raises(RuntimeSourceError) as info:
        open_runtime(mismatched_onnx, backend="onnxruntime", device="cpu")
    message = str(info.value)
    assert "\n" not in message and "16, 16]" in message and "32 px" in message and "hjepa-export" in message


def test_eval_and_serve_say_so_in_one_line(mismatched_onnx) -> None:
    from hjepa.cli.evaluate import main as evaluate
    from hjepa.cli.serve import main as serve

    for command, args in ((evaluate, ["knn", str(mismatched_onnx), "--dataset", "digits", "--no-progress"]),
                          (serve, [str(mismatched_onnx), "--no-gallery", "--device", "cpu", "--port", "1"])):
        result = CliRunner().invoke(command, args)
        assert result.exit_code == 1, result.output
        assert result.output.startswith("Error: ") and result.output.strip().count("\n") == 0, result.output
        assert "metadata says 32 px" in result.output
