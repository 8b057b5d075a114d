"""Image-folder decoding of the image modes real folders hold: 16-bit grayscale, palette, CMYK, alpha, bilevel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hjepa.data.imagefolder import decode_image


def gradient(low: int, high: int, dtype: type) -> np.ndarray:
    """A 24 x 32 horizontal ramp from ``low`` to ``high``."""
    return np.tile(np.linspace(low, high, 32), (24, 1)).round().astype(dtype)


@pytest.mark.parametrize(("mode", "suffix"), [("I;16", ".png"), ("I;16", ".tif"), ("I", ".tif")])
def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path: Path, mode: str, suffix: str) -> None:
    # A 16-bit ramp over the full range must come out as an 8-bit ramp over the full range. Converting straight to
    # RGB clips every value above 255, so all but the darkest 0.4 % of the ramp came out pure white.
    ramp = gradient(0, 65535, np.uint16)
    path = tmp_path / f"ramp{suffix}"
    image = Image.fromarray(ramp) if mode == "I;16" else Image.fromarray(ramp.astype(np.int32), "I")
    image.save(path)
    with Image.open(path) as reopened:
        assert reopened.mode.startswith("I")
    pixels = decode_image(path, 24).numpy()
    assert pixels.shape == (3, 24, 24)
    assert (pixels[0] == pixels[1]).all() and (pixels[1] == pixels[2]).all()
    expected = np.round(ramp[:, 4:28] / 257.0)  # the 24 px center crop of the 32 px wide ramp
    assert np.abs(pixels[0].astype(int) - expected).max() <= 1
    assert pixels.min() < 40 and pixels.max() > 215


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "RGBA", "LA", "1"])
def test_eight_bit_modes_decode_to_rgb(tmp_path: Path, mode: str) -> None:
    rgb = np.stack([gradient(0, 255, np.uint8)] * 3, axis=-1)
    path = tmp_path / ("image.jpg" if mode == "CMYK" else "image.png")
    Image.fromarray(rgb).convert(mode).save(path)
    pixels = decode_image(path, 24).numpy()
    assert pixels.shape == (3, 24, 24)
    assert pixels[:, :, :3].mean() < 100 and pixels[:, :, -3:].mean() > 155  # the ramp still runs dark to light


def test_hidden_files_and_folders_are_not_samples(tmp_path: Path) -> None:
    # A folder copied from macOS holds AppleDouble files ("._0.png": metadata, not an image) beside every image, and
    # tools leave hidden folders (.ipynb_checkpoints) behind; class folders starting with "." are already skipped.
    from hjepa.data import build_dataset

    for split in ("train", "val"):
        folder = tmp_path / split / "cat"
        (folder / ".ipynb_checkpoints").mkdir(parents=True)
        Image.new("RGB", (20, 20), (10, 20, 30)).save(folder / "0.png")
        (folder / "._0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble metadata")
        Image.new("RGB", (20, 20)).save(folder / ".ipynb_checkpoints" / "0-checkpoint.png")
    train = build_dataset("imagefolder", "train", data_dir=str(tmp_path), storage_size=16)
    assert [path.name for path, _ in train.samples] == ["0.png"]
    assert train[0][0][:, 0, 0].tolist() == [10, 20, 30]


@pytest.mark.parametrize(("values", "mode"), [((0, 65535), "I;16"), ((0, 200), "I"), ((0, 1), "F")])
def test_datasets_and_the_app_read_a_high_depth_picture_alike(tmp_path: Path, values: tuple, mode: str) -> None:
    # One rule (hjepa.data.pixels) for image folders and the browser app, so a picture gets the same features in
    # evaluation as in the inspector. An I image holding 8-bit values stays as it is; floats are taken in [0, 1].
    from hjepa.inference.runtimes.images import read_image

    ramp = np.tile(np.linspace(*values, 24), (24, 1))
    image = Image.fromarray(ramp.round().astype(np.uint16)) if mode == "I;16" else Image.fromarray(
        ramp.astype(np.float32) if mode == "F" else ramp.round().astype(np.int32), mode)
    path = tmp_path / "ramp.tif"
    image.save(path)
    from_folder = decode_image(path, 24).numpy().transpose(1, 2, 0)
    from_app = read_image(path)
    np.testing.assert_array_equal(from_folder, from_app)
    assert from_app.min() < 20 and from_app.max() > (190 if mode == "I" else 245)
