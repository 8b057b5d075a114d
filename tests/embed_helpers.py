"""Shared by the hjepa-embed tests: a small image folder with nested folders and broken files, and table readers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

# Expected skips of make_folder's broken files (with max_pixels=TEST_MAX_PIXELS), by id.
BROKEN = {"notes/readme.png": "not-an-image", "b/cut.jpg": "truncated", "b/deep/huge.png": "too-large"}
TEST_MAX_PIXELS = 20_000


def make_folder(root: Path, count: int = 14, seed: int = 0) -> list[str]:
    """``count`` readable pictures (sizes and modes vary) in nested folders, plus the files of BROKEN; returns the
    ids of the readable ones, sorted."""
    rng = np.random.default_rng(seed)
    ids = []
    for i in range(count):
        relative = Path(["a", "b", "b/deep"][i % 3]) / f"img{i:02d}.{['png', 'jpg'][i % 2]}"
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        height, width = int(rng.integers(20, 70)), int(rng.integers(20, 70))
        pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        image = Image.fromarray(pixels) if i % 4 else Image.fromarray(pixels[:, :, 0])  # some grayscale
        image.save(path)
        ids.append(relative.as_posix())
    (root / "notes").mkdir(exist_ok=True)
    (root / "notes" / "readme.png").write_text("this is text, not a picture")
    (root / "notes" / "ignored.txt").write_text("not an image extension: never listed")
    full = root / "b" / "cut.jpg"
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(full, quality=95)
    full.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    Image.new("RGB", (200, 200), (10, 20, 30)).save(root / "b" / "deep" / "huge.png")  # 40,000 > 20,000 pixels
    return sorted(ids)


def read_rows(directory: Path, columns: list[str]) -> dict:
    """``{id: {column: tuple of floats}}`` over every shard, asserting each id appears once."""
    from hjepa.inference.features.collection import read_columns

    table = read_columns(directory, ["id", *columns]).to_pylist()
    ids = [row["id"] for row in table]
    assert len(ids) == len(set(ids)), "an id was written twice"
    return {row["id"]: {c: row[c] for c in columns} for row in table}


def read_errors(directory: Path) -> dict:
    lines = (directory / "errors.jsonl").read_text().splitlines()
    return {entry["id"]: entry["reason"] for entry in map(json.loads, lines)}
