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
