"""What the app computes, without Gradio: image in, pictures and a status line (back-end, latency) out."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from hjepa.config import MaskConfig
from hjepa.inference.runtimes.images import (
    DEFAULT_MAX_PIXELS,
    ImageError,
    ImageInput,
    center_crop_resize,
    decode_image,
    point_to_unit,
    to_rgb_array,
    unit_to_cell,
)
from hjepa.inference.runtimes.runtime import Runtime
from hjepa.masks import HierarchicalMaskGenerator, MultiBlockMaskGenerator, draw_masks, mask_statistics
from hjepa.serve.gallery import Gallery, thumbnail
from hjepa.serve.maps import cosine_similarity_map, pca_rgb, similarity_overlay, upscale_nearest

_CACHE_ENTRIES = 16


class Explorer:
    """The app's four answers over ``runtime``; recent tokens are kept, so a click re-embeds nothing.

    Uploads over the limits fail undecoded; JPEGs decode at the smallest scale keeping twice the sizes used.
    """

    def __init__(
        self,
        runtime: Runtime,
        gallery: Gallery | None = None,
        display_size: int = 256,
        max_upload_bytes: int | None = 10 * 2**20,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.runtime = runtime
        self.gallery = gallery
        self.display_size = int(display_size)
        self.max_upload_bytes = max_upload_bytes
        self.max_pixels = max_pixels
        meta = runtime.metadata
        self.min_side = 2 * max(meta.img_size, self.display_size)
        self.patch_grid = (meta.img_size // meta.patch_size, meta.img_size // meta.patch_size)
        self.mask_config = runtime.config.masks if runtime.config is not None else MaskConfig()
        self._tokens: OrderedDict[tuple[str, int], tuple[np.ndarray, np.ndarray, float]] = OrderedDict()
        self._tokens_lock = threading.Lock()  # Gradio's worker threads

    # Step 0. Inputs: any image -> uint8 [H, W, 3]; its digest keys the token cache
    def load(self, image: ImageInput | None) -> np.ndarray:
        """Path, PIL or array -> uint8 ``[H, W, 3]``, or ImageError."""
        return self.load_sized(image)[0]

    def load_sized(self, image: ImageInput | None) -> tuple[np.ndarray, tuple[int, int]]:
        """``load`` and the full ``(height, width)`` clicks come in (a JPEG may decode smaller)."""
        if image is None:
            raise ImageError("no image: upload one or pick an example")
        if isinstance(image, str) or hasattr(image, "__fspath__"):
            return decode_image(image, self.max_upload_bytes, self.max_pixels, self.min_side)
        array = to_rgb_array(image)
        return array, (array.shape[0], array.shape[1])

    def tokens(self, image: np.ndarray, level: int) -> tuple[np.ndarray, np.ndarray, float]:
        """(tokens ``[N_k, D]``, pooled ``[D]``, latency ms), cached."""
        level = self.runtime.check_level(level)
        key = (hashlib.sha1(image.tobytes() + str(image.shape).encode()).hexdigest(), level)
        with self._tokens_lock:
            if key in self._tokens:
                self._tokens.move_to_end(key)
                return self._tokens[key]
        start = time.perf_counter()
        tokens, pooled = self.runtime.embed([image], level)
        result = (tokens[0], pooled[0], (time.perf_counter() - start) * 1000.0)
        with self._tokens_lock:
            self._tokens[key] = result
            while len(self._tokens) > _CACHE_ENTRIES:
                self._tokens.popitem(last=False)
        return result

    def status(self, what: str, latency_ms: float | None = None) -> str:
        """``backend · what · latency`` in one Markdown line."""
        timing = f" · **{latency_ms:.1f} ms**" if latency_ms is not None else ""
        return f"`{self.runtime.backend}` · {what}{timing}"

    # Step 1. Per-level PCA maps
    def embed(self, image: ImageInput | None) -> tuple[list[np.ndarray], str, dict[str, Any]]:
        """A PCA map ``[S, S, 3]`` per level, the status, and details (pooled vectors) for API callers."""
        array = self.load(image)
        maps, details, total = [], {"backend": self.runtime.backend, "levels": {}}, 0.0
        for level in self.runtime.levels:
            tokens, pooled, latency = self.tokens(array, level)
            grid = self.runtime.metadata.grid(level)
            maps.append(upscale_nearest(pca_rgb(tokens, grid), self.display_size))
            total += latency
            details["levels"][str(level)] = {
                "grid": list(grid),
                "embed_dim": int(tokens.shape[-1]),
                "latency_ms": round(latency, 3),
                "pooled": [round(float(v), 6) for v in pooled],
            }
        details["latency_ms"] = round(total, 3)
        levels = ", ".join(str(k) for k in self.runtime.levels)
        return maps, self.status(f"embedded levels {levels}", total), details

    # Step 2. The training masks over the model's view
    def masks(self, image: ImageInput | None, seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """Multi-block and hierarchical masks drawn over the crop ``[S, S, 3]``, and their statistics."""
        view = center_crop_resize(self.load(image), self.display_size)
        cfg, levels = self.mask_config, self.runtime.metadata.num_levels
        generators = {
            "multiblock": MultiBlockMaskGenerator.from_config(cfg, self.patch_grid, levels),
            "hierarchical": HierarchicalMaskGenerator.from_config(cfg, self.patch_grid, levels),
        }
        drawn, stats = [], {}
        for name, generator in generators.items():
            batch = generator(1, torch.Generator().manual_seed(int(seed)))
            drawn.append(draw_masks(view, batch))
            stats[name] = mask_statistics(batch)
        return drawn[0], drawn[1], stats

    # Step 3. One patch against every other, at one level
    def similarity(
        self, image: ImageInput | None, level: int, x: float | None = None, y: float | None = None
    ) -> tuple[np.ndarray, str]:
        """Similarity ``[S, S, 3]`` to the cell under pixel ``(x, y)`` (default: the centre), and the status."""
        array, (height, width) = self.load_sized(image)
        if x is None or y is None:
            unit = (0.5, 0.5)
        else:
            unit = point_to_unit(float(x), float(y), height, width)
            if unit is None:
                raise ImageError(f"({x:.0f}, {y:.0f}) is outside the center square the model sees; click inside it")
        level = self.runtime.check_level(level)
        grid = self.runtime.metadata.grid(level)
        row, col = unit_to_cell(*unit, grid)
        tokens, _, latency = self.tokens(array, level)
        similarity = cosine_similarity_map(tokens, row * grid[1] + col).reshape(grid)
        view = center_crop_resize(array, self.display_size)
        overlay = similarity_overlay(view, similarity, (row, col))
        what = f"level {level} patch (row {row}, col {col}) of {grid[0]}x{grid[1]}"
        return overlay, self.status(what, latency)

    # Step 4. Nearest gallery images
    def neighbours(self, image: ImageInput | None, level: int, k: int = 8) -> tuple[list[tuple[np.ndarray, str]], str]:
        """The ``k`` nearest as (thumbnail ``[h, w, 3]``, caption) pairs, and the status."""
        if self.gallery is None:
            raise ImageError("this app was started without a gallery")
        array = self.load(image)
        _, pooled, latency = self.tokens(array, level)
        start = time.perf_counter()
        hits = self.gallery.neighbours(self.runtime, pooled, level, k)
        search_ms = (time.perf_counter() - start) * 1000.0
        items = [(thumbnail(hit.image), f"{hit.label} · {hit.similarity:.3f}") for hit in hits]
        what = f"{len(items)} neighbours at level {level} from {self.gallery.description} (search {search_ms:.1f} ms)"
        return items, self.status(what, latency)


def stats_markdown(stats: dict[str, dict[str, Any]]) -> str:
    """A Markdown table, one column per generator."""
    names = list(stats)
    rows = [
        ("context tokens", lambda s: str(s["context_tokens"])),
        ("context fraction", lambda s: f"{s['context_fraction']:.2f}"),
        ("target blocks / level", lambda s: ", ".join(str(v) for v in s["target_blocks"])),
        ("target coverage / level", lambda s: ", ".join(f"{v:.2f}" for v in s["target_coverage"])),
        ("uncovered fraction", lambda s: f"{s['uncovered_fraction']:.2f}"),
    ]
    lines = ["| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    lines += [f"| {label} | " + " | ".join(fmt(stats[n]) for n in names) + " |" for label, fmt in rows]
    return "\n".join(lines)
