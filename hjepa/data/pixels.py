"""High-bit-depth pictures to 8 bits, one rule for the datasets and the app: the same file gives the same pixels
whether an image folder or the browser inspector reads it."""

from __future__ import annotations

import numpy as np
from PIL import Image


def is_high_depth(image: Image.Image) -> bool:
    """16-bit (``I;16*``), 32-bit integer (``I``) or float (``F``) single-channel modes."""
    return image.mode in ("I", "F") or image.mode.startswith("I;16")


def high_depth_to_uint8(image: Image.Image) -> np.ndarray:
    """A high-depth single-channel image (``is_high_depth``) -> uint8 ``[H, W]``.

    PIL's own ``convert("RGB")`` clips these to 0..255, which turns a 16-bit picture white and a float one black.
    16-bit values are scaled by 255 / 65535; an ``I`` image is taken as 16-bit when a value exceeds 255 (Pillow
    opens some 16-bit files as ``I``), else as 8-bit; float pixels are taken to be in [0, 1], like float arrays.
    """
    array = np.asarray(image)
    if image.mode == "F":
        return np.clip(np.round(np.nan_to_num(array.astype(np.float64)) * 255.0), 0, 255).astype(np.uint8)
    array = array.astype(np.int64)
    if image.mode.startswith("I;16") or array.max(initial=0) > 255:
        return np.round(np.clip(array, 0, 65535) * (255.0 / 65535.0)).astype(np.uint8)
    return np.clip(array, 0, 255).astype(np.uint8)


def to_rgb_image(image: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB, high-depth pictures through ``high_depth_to_uint8`` rather than PIL's clipping."""
    if is_high_depth(image):
        image = Image.fromarray(high_depth_to_uint8(image), "L")
    return image.convert("RGB")
