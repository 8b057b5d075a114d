"""Pictures of features: PCA-to-RGB maps and one patch's similarity map; numpy, cheap enough for every click."""

from __future__ import annotations

import numpy as np

# dark blue -> teal -> yellow, close to viridis
_COLOUR_ANCHORS = np.array(
    [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]],
    dtype=np.float32,
)
HIGHLIGHT = np.array([255, 40, 40], np.float32)  # outline of the selected patch


def pca_rgb(tokens: np.ndarray, grid: tuple[int, int], low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """Tokens ``[(B,) h*w, D]`` -> uint8 ``[(B,) h, w, 3]``: the first three principal components as RGB.

    One PCA per batch, so colours compare across images; signs fixed, so the same tokens give the same colours.
    """
    array = np.asarray(tokens, dtype=np.float64)
    single = array.ndim == 2
    if single:
        array = array[None]
    if array.ndim != 3:
        raise ValueError(f"tokens must be [N, D] or [B, N, D], got shape {tuple(np.shape(tokens))}")
    batch, count, dim = array.shape
    if count != grid[0] * grid[1]:
        raise ValueError(f"{count} tokens do not fill a {grid[0]}x{grid[1]} grid")
    flat = array.reshape(-1, dim)
    centred = flat - flat.mean(axis=0, keepdims=True)
    rgb = np.full((flat.shape[0], 3), 128.0)
    if flat.shape[0] > 1 and np.abs(centred).max() > 0:
        _, singular, components = np.linalg.svd(centred, full_matrices=False)
        for channel in range(min(3, components.shape[0])):
            if singular[channel] <= singular[0] * 1e-6:
                break  # no variance left: stay grey
            direction = components[channel]
            direction = direction * np.sign(direction[np.argmax(np.abs(direction))])
            values = centred @ direction
            lo, hi = np.percentile(values, [low, high])
            if hi - lo > 1e-12:
                rgb[:, channel] = np.clip((values - lo) / (hi - lo), 0.0, 1.0) * 255.0
    out = np.round(rgb).astype(np.uint8).reshape(batch, grid[0], grid[1], 3)
    return out[0] if single else out


def cosine_similarity_map(tokens: np.ndarray, index: int) -> np.ndarray:
    """Tokens ``[N, D]`` -> cosine to token ``index``, float32 ``[N]``."""
    array = np.asarray(tokens, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"tokens must be [N, D], got shape {array.shape}")
    if not 0 <= index < array.shape[0]:
        raise IndexError(f"patch index {index} is outside the {array.shape[0]} tokens")
    unit = array / np.maximum(np.linalg.norm(array, axis=1, keepdims=True), 1e-12)
    return np.clip(unit @ unit[index], -1.0, 1.0).astype(np.float32)


def colourise(values: np.ndarray, vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """float ``[h, w]`` -> uint8 ``[h, w, 3]``, viridis-like, min..max by default."""
    values = np.asarray(values, dtype=np.float32)
    vmin = float(values.min()) if vmin is None else vmin
    vmax = float(values.max()) if vmax is None else vmax
    scaled = np.clip((values - vmin) / max(vmax - vmin, 1e-12), 0.0, 1.0) * (len(_COLOUR_ANCHORS) - 1)
    lower = np.minimum(np.floor(scaled).astype(int), len(_COLOUR_ANCHORS) - 2)
    frac = (scaled - lower)[..., None]
    colours = _COLOUR_ANCHORS[lower] * (1 - frac) + _COLOUR_ANCHORS[lower + 1] * frac
    return np.round(colours).astype(np.uint8)


def upscale_nearest(image: np.ndarray, size: int) -> np.ndarray:
    """``[h, w, C]`` -> ``[size, size, C]``: each cell a sharp-edged block."""
    height, width = image.shape[:2]
    rows = np.arange(size) * height // size
    cols = np.arange(size) * width // size
    return image[rows[:, None], cols[None, :]]


def cell_edges(cells: int, size: int) -> np.ndarray:
    """Cell boundaries in pixels, as :func:`upscale_nearest` draws them."""
    return -(-np.arange(cells + 1) * size // cells)  # ceil(k * size / cells)


def similarity_overlay(
    image: np.ndarray, similarity: np.ndarray, cell: tuple[int, int], alpha: float = 0.6
) -> np.ndarray:
    """Similarity ``[h, w]`` blended over the crop ``[S, S, 3]``, the selected ``(row, col)`` outlined."""
    size = image.shape[0]
    heat = upscale_nearest(colourise(similarity, vmax=1.0), size).astype(np.float32)
    out = (1 - alpha) * image.astype(np.float32) + alpha * heat
    rows, cols = cell_edges(similarity.shape[0], size), cell_edges(similarity.shape[1], size)
    top, bottom = rows[cell[0]], rows[cell[0] + 1]
    left, right = cols[cell[1]], cols[cell[1] + 1]
    thickness = max(1, size // 128)
    out[top : top + thickness, left:right] = HIGHLIGHT
    out[bottom - thickness : bottom, left:right] = HIGHLIGHT
    out[top:bottom, left : left + thickness] = HIGHLIGHT
    out[top:bottom, right - thickness : right] = HIGHLIGHT
    return np.clip(out, 0, 255).astype(np.uint8)
