"""The README's level picture (docs/serve_levels.png): the quickstart encoder in hjepa-serve on a 2x2 test mosaic,
a patch clicked, level 1 selected. Needs a trained ``runs/fashion-mnist`` (``make demo``), Playwright and Chromium.

    python scripts/serve_levels_screenshot.py [--checkpoint runs/fashion-mnist/checkpoints/last.pt]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from tests.test_serve_browser import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_ARGS,
    TIMEOUT_MS,
    free_port,
    save_screenshot,
    wait_for_change,
)


def mosaic_picture(path: Path, seed: int) -> None:
    """A 2x2 mosaic of Fashion-MNIST test garments, 224 px (nearest upscaling keeps the pixels visible)."""
    from hjepa.data import build_dataset
    from hjepa.data.mosaics import make_mosaics

    images, labels = build_dataset("fashion-mnist", "test").tensors()
    mosaics = make_mosaics(images, labels, 10, 1, 2, 56, seed, empty_fraction=0.0)
    picture = mosaics.images[0].permute(1, 2, 0).squeeze(-1).numpy()
    Image.fromarray(picture).resize((224, 224), Image.NEAREST).save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(ROOT / "runs" / "fashion-mnist" / "checkpoints" / "last.pt"))
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "docs" / "serve_levels.png"))
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    from hjepa.serve import build_gallery, open_runtime
    from hjepa.serve.app import build_app, launch_app

    work = Path(tempfile.mkdtemp(prefix="hjepa-shot-"))
    picture = work / "mosaic.png"
    mosaic_picture(picture, args.seed)
    runtime = open_runtime(args.checkpoint, device="cpu")
    demo = build_app(runtime, build_gallery(runtime, size=300, cache_dir=work / "cache"))
    url = launch_app(demo, host="127.0.0.1", port=free_port(), block=False, quiet=True)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url, wait_until="load")
            page.wait_for_selector("#input-image input[type=file]", state="attached", timeout=TIMEOUT_MS)
            page.set_input_files("#input-image input[type=file]", str(picture))
            first = wait_for_change(page, "#similarity", None)
            box = page.wait_for_selector("#input-image img", timeout=TIMEOUT_MS).bounding_box()
            page.mouse.click(box["x"] + box["width"] * 0.25, box["y"] + box["height"] * 0.25)  # top-left garment
            clicked = wait_for_change(page, "#similarity", first)
            page.get_by_text("level 1 (4x4)").click()
            wait_for_change(page, "#similarity", clicked)
            page.wait_for_selector("#neighbours img", timeout=TIMEOUT_MS)
            page.wait_for_function("() => /neighbours at level 1/.test("
                                   "document.querySelector('#neighbour-status').innerText)", timeout=TIMEOUT_MS)
            page.wait_for_function("() => Array.from(document.images).every((img) => img.complete)",
                                   timeout=TIMEOUT_MS)
            save_screenshot(page, Path(args.out), max_bytes=300_000)
            print(page.inner_text("#status"))
            browser.close()
    finally:
        demo.close()
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
