"""Image files as cameras and editors write them: EXIF orientation, 16-bit and float pixels, huge pictures."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from hjepa.inference.runtimes.images import ImageError, read_image


def test_exif_rotated_jpeg_is_read_upright(tmp_path) -> None:
    # Stored 6 high x 10 wide, left half dark; EXIF orientation 6 means "rotate 90 degrees clockwise to display", so
    # browsers show it 10 high x 6 wide with the dark half on top, and clicks come in that frame.
    stored = np.full((6, 10, 3), 230, np.uint8)
    stored[:, :5] = 20
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "phone.jpg"
    Image.fromarray(stored).save(path, exif=exif.tobytes(), quality=95)
    upright = read_image(path)
    assert upright.shape == (10, 6, 3)
    assert upright[:4].mean() < 60 and upright[6:].mean() > 190


@pytest.mark.parametrize("name", ["depth.png", "depth.tif"])
def test_16_bit_grayscale_keeps_its_tones(tmp_path, name) -> None:
    # Pillow opens a 16-bit grayscale PNG as mode I;16 and a 32-bit integer TIFF as mode I; both once came out white.
    ramp = np.linspace(0, 65535, 64).round().astype(np.uint16).reshape(8, 8)
    image = Image.fromarray(ramp) if name.endswith(".png") else Image.fromarray(ramp.astype(np.int32), "I")
    path = tmp_path / name
    image.save(path)
    assert Image.open(path).mode == ("I;16" if name.endswith(".png") else "I")
    array = read_image(path)
    assert array.shape == (8, 8, 3) and array.dtype == np.uint8
    expected = np.round(ramp / 257.0)
    np.testing.assert_allclose(array[..., 0], expected, atol=1)
    assert (array[..., 0] == array[..., 2]).all()


def test_float_tiff_in_unit_range_is_not_black(tmp_path) -> None:
    values = np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4)
    path = tmp_path / "float.tif"
    Image.fromarray(values, "F").save(path)
    np.testing.assert_allclose(read_image(path)[..., 1], np.round(values * 255), atol=1)


def test_picture_over_the_pixel_limit_says_it_is_too_large(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # a 15 x 15 picture is then a "decompression bomb"
    path = tmp_path / "huge.png"
    Image.new("RGB", (15, 15)).save(path)
    # PIL refuses pictures over twice its limit (here 200 pixels) outright.
    message = r"huge.png is too large to decode \(Image size \(225 pixels\) exceeds limit of 200 pixels\)$"
    with pytest.raises(ImageError, match=message):
        read_image(path)


def test_upload_over_the_pixel_limit_says_it_is_too_large(tmp_path, monkeypatch) -> None:
    import gradio as gr
    from gradio.data_classes import ImageData

    from hjepa.serve.app import guard_uploads

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    path = tmp_path / "huge.png"
    Image.new("RGB", (15, 15)).save(path)
    component = guard_uploads(gr.Image(type="filepath", image_mode=None), max_bytes=2**20)
    with pytest.raises(gr.Error, match="huge.png is too large to decode"):
        component.preprocess(ImageData(path=str(path), orig_name="huge.png"))
    small = tmp_path / "small.png"
    Image.new("RGB", (5, 5)).save(small)
    assert component.preprocess(ImageData(path=str(small), orig_name="small.png")) == str(small)
