"""Any picture -> uint8 RGB ``[H, W, 3]`` -> center square at the model size, the same crop in every runtime.

One crop is what lets a click on the original map to a patch (:func:`point_to_unit`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from hjepa.data.pixels import high_depth_to_uint8, is_high_depth
from hjepa.errors import HJEPAError

ImageInput = Any  # PIL.Image.Image | np.ndarray (H x W [x C]) | str | Path
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# 40 MP: ~0.5 GB while decoding, for a model that sees a few hundred pixels a side
DEFAULT_MAX_PIXELS = 40_000_000


class ImageError(HJEPAError, ValueError):
    """Unreadable or too large; the message names the file and the limit."""


def read_image(
    path: str | Path, max_bytes: int | None = None, max_pixels: int | None = None, min_side: int | None = None
) -> np.ndarray:
    """uint8 RGB ``[H, W, 3]``; limits as :func:`decode_image`."""
    return decode_image(path, max_bytes, max_pixels, min_side)[0]


def decode_image(
    path: str | Path, max_bytes: int | None = None, max_pixels: int | None = None, min_side: int | None = None
) -> tuple[np.ndarray, tuple[int, int]]:
    """uint8 RGB ``[h, w, 3]`` and the full upright ``(H, W)``, in which clicks arrive.

    Limits are checked before decoding: a 0.5 MB PNG can declare 0.5 GB of pixels. With ``min_side`` a JPEG is
    decoded at 1/2, 1/4 or 1/8 scale, so ``(h, w)`` can be smaller than ``(H, W)``.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path} does not exist or is not a file")
    size = path.stat().st_size
    if max_bytes is not None and size > max_bytes:
        raise ImageError(f"{path.name} is {size / 2**20:.1f} MB, over the {max_bytes / 2**20:.1f} MB upload limit")
    try:
        with Image.open(path) as image:  # reads the header only
            stored = image.size
            if min_side is not None and image.format == "JPEG" and min(image.size) > min_side:
                scale = min(image.size) / min_side
                image.draft(image.mode, (math.ceil(image.width / scale), math.ceil(image.height / scale)))
            check_pixels(path.name, image.size, max_pixels)
            drafted = image.size
            image.load()
            # browsers turn by EXIF, so clicks come upright: the model sees it so too
            array = to_rgb_array(_upright(image))
    except Image.DecompressionBombError as exc:
        raise ImageError(too_many_pixels(path.name, exc)) from None
    except (UnidentifiedImageError, OSError) as exc:
        raise ImageError(f"{path.name} is not an image this app can read ({type(exc).__name__}: {exc})"[:300]) from None
    turned = array.shape[:2] != (drafted[1], drafted[0])
    return array, (stored[0], stored[1]) if turned else (stored[1], stored[0])


def check_pixels(name: str, size: tuple[int, int], max_pixels: int | None) -> None:
    """ImageError naming the sizes when ``width * height > max_pixels``."""
    width, height = size
    if max_pixels is not None and width * height > max_pixels:
        raise ImageError(
            f"{name} is {width} x {height} pixels ({width * height / 1e6:.1f} megapixels), over this server's limit "
            f"of {max_pixels / 1e6:g} megapixels; send a smaller picture"
        )


def _upright(image: Image.Image) -> Image.Image:
    """Turned by its EXIF orientation, as browsers show it."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # bad EXIF raises many types; the pixels are fine
        return image


def too_many_pixels(name: str, exc: Exception) -> str:
    """PIL's decompression-bomb message up to its first comma: the pixel count and the limit."""
    return f"{name} is too large to decode ({str(exc).split(',')[0]})"[:300]


def to_rgb_array(image: ImageInput) -> np.ndarray:
    """PIL image, array ``[H, W (, 1|3|4)]`` (uint8 or float in [0, 1]) or path -> uint8 ``[H, W, 3]``."""
    if isinstance(image, (str, Path)):
        return read_image(image)
    if isinstance(image, Image.Image) and is_high_depth(image):
        array = high_depth_to_uint8(image)
    elif isinstance(image, Image.Image):
        if image.mode not in ("RGB", "L"):
            image = image.convert("RGBA").convert("RGB") if "A" in image.getbands() else image.convert("RGB")
        array = np.asarray(image)
    elif isinstance(image, (np.ndarray, torch.Tensor)):
        array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else image
    else:
        raise ImageError(f"expected a PIL image, a numpy array or a file path, got {type(image).__name__}")
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.floating):
            raise ImageError(f"image arrays must be uint8 or float in [0, 1], got dtype {array.dtype}")
        array = np.clip(np.round(array * 255.0), 0, 255).astype(np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4) or min(array.shape[:2]) < 1:
        raise ImageError(f"expected an image array [H, W] or [H, W, 1|3|4], got shape {tuple(array.shape)}")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array[:, :, :3])


def batch_to_list(images: Any) -> list[ImageInput]:
    """A list of images, a numpy ``[B, H, W, C]`` or torch ``[B, C, H, W]`` batch -> a list of images."""
    if isinstance(images, torch.Tensor):
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ImageError(f"a torch image batch must be [B, 1|3, H, W], got {tuple(images.shape)}")
        return list(images.permute(0, 2, 3, 1).cpu().numpy())
    if isinstance(images, np.ndarray):
        if images.ndim != 4:
            raise ImageError(f"a numpy image batch must be [B, H, W, C], got {tuple(images.shape)}")
        return list(images)
    if isinstance(images, (Image.Image, str, Path)):
        return [images]
    if isinstance(images, Sequence):
        return list(images)
    raise ImageError(f"expected a list of images or an image batch, got {type(images).__name__}")


def crop_box(height: int, width: int) -> tuple[int, int, int]:
    """``(top, left, side)`` of the center square of an ``height x width`` image."""
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side


def center_crop_resize(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 ``[H, W, 3]`` -> ``[size, size, 3]``: the center square, bilinear."""
    top, left, side = crop_box(*image.shape[:2])
    square = image[top : top + side, left : left + side]
    if side == size:
        return np.ascontiguousarray(square)
    return np.asarray(Image.fromarray(square).resize((size, size), Image.BILINEAR))


def point_to_unit(x: float, y: float, height: int, width: int) -> tuple[float, float] | None:
    """Pixel ``(x, y)`` -> ``(u, v)`` in [0, 1) of the center square; None outside it."""
    top, left, side = crop_box(height, width)
    u, v = (x - left) / side, (y - top) / side
    if not (0 <= u < 1 and 0 <= v < 1):
        return None
    return u, v


def unit_to_cell(u: float, v: float, grid: tuple[int, int]) -> tuple[int, int]:
    """``(u, v)`` -> ``(row, col)`` of the cell under it."""
    return min(int(v * grid[0]), grid[0] - 1), min(int(u * grid[1]), grid[1] - 1)
