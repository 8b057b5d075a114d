"""The app in a real headless Chromium: upload, click a patch, change the level, reject a non-image; no outside
requests. Saves a screenshot to tests/artifacts/serve.png, and to docs/serve.png (the README's) when that is
missing or HJEPA_UPDATE_SCREENSHOTS=1."""

from __future__ import annotations

import io
import os
import shutil
import socket
from pathlib import Path

import pytest
from PIL import Image

from hjepa.serve.gallery import EXAMPLES_DIR

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).parents[1]
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-gpu",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
TIMEOUT_MS = 20_000

pytestmark = [
    pytest.mark.browser,
    pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword is deprecated)"),  # Gradio's pandas use
    pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason=f"no Chromium at {CHROMIUM}"),
]
sync_api = pytest.importorskip("playwright.sync_api")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(tiny_checkpoint, tmp_path_factory):
    from hjepa.serve import build_gallery, open_runtime
    from hjepa.serve.app import build_app, launch_app

    runtime = open_runtime(tiny_checkpoint, device="cpu")
    gallery = build_gallery(runtime, size=60, cache_dir=tmp_path_factory.mktemp("gallery"))
    demo = build_app(runtime, gallery)
    yield launch_app(demo, host="127.0.0.1", port=free_port(), block=False, quiet=True)
    demo.close()


def image_src(page, selector: str) -> str | None:
    element = page.query_selector(f"{selector} img")
    return element.get_attribute("src") if element else None


def wait_for_change(page, selector: str, before: str | None) -> str:
    page.wait_for_function(
        "([sel, old]) => { const img = document.querySelector(sel + ' img'); "
        "return img && img.getAttribute('src') && img.getAttribute('src') !== old && img.complete; }",
        arg=[selector, before],
        timeout=TIMEOUT_MS,
    )
    return image_src(page, selector)


def save_screenshot(page, path: Path, max_bytes: int | None = None) -> None:
    """A full-page PNG; re-encoded with a 256-colour palette when it must stay under ``max_bytes``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    png = page.screenshot(full_page=True)
    if max_bytes is not None and len(png) > max_bytes:
        image = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", optimize=True)
        png = buffer.getvalue()
    path.write_bytes(png)


def test_browser_upload_click_level_and_bad_upload(app_url, tmp_path) -> None:
    outside: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on(
                "request",
                lambda request: (
                    outside.append(request.url)
                    if not request.url.startswith(("http://127.0.0.1", "data:", "blob:"))
                    else None
                ),
            )
            # Not "networkidle": Gradio keeps a heartbeat stream open for the whole session.
            page.goto(app_url, wait_until="load")
            page.wait_for_selector("#input-image input[type=file]", state="attached", timeout=TIMEOUT_MS)

            # Step 1. Upload an example picture: PCA maps, masks, similarity and the latency line appear.
            page.set_input_files("#input-image input[type=file]", str(EXAMPLES_DIR / "coffee.png"))
            first = wait_for_change(page, "#similarity", None)
            for level in (0, 1):
                page.wait_for_selector(f"#pca-level{level} img", timeout=TIMEOUT_MS)
            page.wait_for_function(
                "() => /\\d+\\.\\d ms/.test(document.querySelector('#status').innerText)", timeout=TIMEOUT_MS
            )
            assert "torch[cpu]" in page.inner_text("#status")

            # Step 2. Click near the top-right of the 336x224 picture: pixel (235, 22) is in the last column of the
            # 224 px center square the model sees (u = (235 - 56) / 224 = 0.8), in its first row.
            picture = page.wait_for_selector("#input-image img", timeout=TIMEOUT_MS)
            box = picture.bounding_box()
            page.mouse.click(box["x"] + box["width"] * 0.7, box["y"] + box["height"] * 0.1)
            clicked = wait_for_change(page, "#similarity", first)
            page.wait_for_function(
                "() => /level 0 patch \\(row 0, col 3\\)/.test(document.querySelector('#status').innerText)",
                timeout=TIMEOUT_MS,
            )

            # Step 3. Change the level: the map is recomputed on the 2x2 grid.
            page.get_by_text("level 1 (2x2)").click()
            wait_for_change(page, "#similarity", clicked)
            page.wait_for_function(
                "() => /level 1 patch \\(row 0, col 1\\) of 2x2/.test(document.querySelector('#status').innerText)",
                timeout=TIMEOUT_MS,
            )
            page.wait_for_selector("#neighbours img", timeout=TIMEOUT_MS)
            # The neighbour search finishes after the similarity map and reports on its own line: the similarity
            # status must survive it (one shared line used to be overwritten by whichever finished last).
            page.wait_for_function(
                "() => /neighbours at level 1/.test(document.querySelector('#neighbour-status').innerText)",
                timeout=TIMEOUT_MS,
            )
            assert "level 1 patch (row 0, col 1) of 2x2" in page.inner_text("#status")
            page.wait_for_function("() => Array.from(document.images).every((img) => img.complete)", timeout=TIMEOUT_MS)
            save_screenshot(page, ROOT / "tests" / "artifacts" / "serve.png")
            # The committed README picture is written when missing or asked for, so test runs leave git clean.
            docs_picture = ROOT / "docs" / "serve.png"
            if not docs_picture.exists() or os.environ.get("HJEPA_UPDATE_SCREENSHOTS") == "1":
                save_screenshot(page, docs_picture, max_bytes=300_000)

            # Step 4. A file that is not an image: a visible error message, and the page keeps working.
            bogus = tmp_path / "notes.png"
            bogus.write_text("this is not a picture")
            page.set_input_files("#input-image input[type=file]", str(bogus))
            page.get_by_text("not an image this app can read").first.wait_for(timeout=TIMEOUT_MS)
        finally:
            browser.close()
    assert (ROOT / "docs" / "serve.png").stat().st_size < 300_000
    assert not outside, f"the page made outside requests: {outside[:5]}"
