"""One sample's masks over its image, in numpy: the picture the app shows."""

from __future__ import annotations

import numpy as np

from hjepa.masks.batch import MaskBatch

CONTEXT_COLOUR = (40, 110, 255)  # blue
# per level: orange, magenta, green, yellow, repeating
LEVEL_COLOURS = ((255, 140, 0), (230, 40, 200), (40, 200, 80), (250, 230, 40))


def _edges(pixels: int, cells: int) -> np.ndarray:
    """Patch boundaries in pixels; the image need not be a multiple of the grid."""
    return np.round(np.linspace(0, pixels, cells + 1)).astype(int)


def draw_masks(image: np.ndarray, masks: MaskBatch, index: int = 0, level: int | None = None) -> np.ndarray:
    """A new uint8 ``[H, W, 3]``: context blue, the rest darkened, targets outlined in their level's colour.

    Deeper levels' outlines are inset, so coinciding blocks stay visible; ``level`` draws one level only.
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        raise ValueError(f"image must be a uint8 numpy array of shape [H, W, 3], got {type(image).__name__} {shape}")
    if not -masks.batch_size <= index < masks.batch_size:
        raise IndexError(f"index {index} is out of range for a batch of {masks.batch_size} masks")
    if level is not None and not 0 <= level < masks.num_levels:
        raise ValueError(f"level must be None or in [0, {masks.num_levels}), got {level}")
    grid_h, grid_w = masks.grid
    height, width = image.shape[:2]
    if height < grid_h or width < grid_w:
        raise ValueError(f"image of {height}x{width} pixels is smaller than the {grid_h}x{grid_w} patch grid")
    row_edges, col_edges = _edges(height, grid_h), _edges(width, grid_w)
    # pixel -> patch, so a patch mask becomes a pixel mask in one index
    pixel_rows = np.repeat(np.arange(grid_h), np.diff(row_edges))
    pixel_cols = np.repeat(np.arange(grid_w), np.diff(col_edges))

    def to_pixels(patch_mask: np.ndarray) -> np.ndarray:
        return patch_mask.reshape(grid_h, grid_w)[pixel_rows[:, None], pixel_cols[None, :]]

    levels = range(masks.num_levels) if level is None else [level]
    context = masks.context[index].detach().cpu().numpy().astype(bool)
    targets = {k: masks.targets[k][index].detach().cpu().numpy().astype(bool) for k in levels}  # [T_k, N]
    out = image.astype(np.float32)
    any_target = np.zeros(grid_h * grid_w, dtype=bool)
    for blocks in targets.values():
        any_target |= blocks.any(axis=0)
    out[to_pixels(~context & ~any_target)] *= 0.45
    ctx_pixels = to_pixels(context)
    out[ctx_pixels] = 0.6 * out[ctx_pixels] + 0.4 * np.asarray(CONTEXT_COLOUR, np.float32)
    thickness = max(1, min(height, width) // 112)
    for k, blocks in targets.items():
        colour = np.asarray(LEVEL_COLOURS[k % len(LEVEL_COLOURS)], np.float32)
        tinted = to_pixels(blocks.any(axis=0))
        out[tinted] = 0.65 * out[tinted] + 0.35 * colour
        inset = k * thickness if level is None else 0
        for block in blocks:
            rows, cols = np.nonzero(block.reshape(grid_h, grid_w))
            top, bottom = row_edges[rows.min()] + inset, row_edges[rows.max() + 1] - inset
            left, right = col_edges[cols.min()] + inset, col_edges[cols.max() + 1] - inset
            if bottom - top < 2 * thickness or right - left < 2 * thickness:
                continue  # too small to inset; its tint still shows
            out[top : top + thickness, left:right] = colour
            out[bottom - thickness : bottom, left:right] = colour
            out[top:bottom, left : left + thickness] = colour
            out[top:bottom, right - thickness : right] = colour
    return np.clip(out, 0, 255).astype(np.uint8)
