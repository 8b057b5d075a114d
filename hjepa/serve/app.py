"""The Gradio app: input on the left, PCA maps, similarity, neighbours and masks on the right.

Events only wire :class:`~hjepa.serve.views.Explorer` methods; four are API endpoints: ``/embed``, ``/masks``,
``/similarity``, ``/neighbours``. Served on 127.0.0.1, never shared, no outside requests.
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from hjepa.inference.runtimes.images import DEFAULT_MAX_PIXELS, too_many_pixels
from hjepa.inference.runtimes.runtime import Runtime
from hjepa.serve.gallery import EXAMPLES_DIR, Gallery
from hjepa.serve.views import Explorer, stats_markdown

# local fonts: the default theme fetches Google's
SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "Segoe UI", "Roboto", "sans-serif"]
MONO_FONTS = ["ui-monospace", "SFMono-Regular", "Menlo", "monospace"]
CSS = "#status p { margin: 0; } .pca-map img, .mask-view img { image-rendering: pixelated; }"
# one queue for every model call bounds the server's memory
MODEL_QUEUE = "model"
DEFAULT_CONCURRENCY = 2
# every answer is its own file (answer_picture): expire them hourly
DELETE_CACHE = (3600, 3600)


def example_files() -> list[Path]:
    """The shipped example pictures."""
    return sorted(EXAMPLES_DIR.glob("*.png"))


def guard_uploads(component: gr.Image, max_bytes: int | None) -> gr.Image:
    """Turn an unreadable or oversized upload into a ``gr.Error`` naming the file, not a PIL traceback.

    Wraps the instance: a ``gr.Image`` subclass would make Gradio write a ``.pyi`` stub beside this file.
    """
    original = component.preprocess

    def preprocess(payload: Any) -> Any:
        if payload is None:
            return None
        name = getattr(payload, "orig_name", None) or "the upload"
        path = getattr(payload, "path", None)
        if path and max_bytes is not None and os.path.isfile(path) and os.path.getsize(path) > max_bytes:
            size_mb, limit_mb = os.path.getsize(path) / 2**20, max_bytes / 2**20
            message = f"{name} is {size_mb:.1f} MB, over the {limit_mb:.1f} MB upload limit"
            raise gr.Error(message, print_exception=False)
        try:
            return original(payload)
        except Image.DecompressionBombError as exc:
            raise gr.Error(too_many_pixels(name, exc), print_exception=False) from None
        except Exception as exc:  # UnidentifiedImageError, OSError (truncated), ...
            message = f"{name} is not an image this app can read ({type(exc).__name__})"
            raise gr.Error(message, print_exception=False) from None

    component.preprocess = preprocess  # type: ignore[method-assign]
    return component


def answer_picture(array: np.ndarray) -> Image.Image:
    """A picture with a unique PNG text chunk, so it gets its own cache file.

    Gradio caches by content hash with a truncating write: two equal answers at once cut each other short.
    """
    picture = Image.fromarray(array)
    picture.info["hjepa-answer"] = uuid.uuid4().hex  # Gradio writes .info text into the PNG
    return picture


def _as_gradio_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """User errors (bad image, click outside the crop, unknown level) shown as ``gr.Error``."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ValueError, IndexError) as exc:  # ImageError is a ValueError
            raise gr.Error(str(exc), print_exception=False) from None

    return wrapper


def _whole_number(value: Any, name: str) -> int:
    """``int(value)`` (sliders send floats); API junk is a ValueError naming the input."""
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a whole number, got {value!r}") from None


@dataclass
class Handlers:
    """Each event: one :class:`Explorer` call, answered in Gradio's types."""

    views: Explorer
    has_gallery: bool
    num_levels: int

    def embed(self, image: str | None) -> tuple[Any, ...]:
        if image is None:
            return (*[None] * self.num_levels, "no image yet: upload one or pick an example", {})
        maps, status, details = self.views.embed(image)
        return (*[answer_picture(picture) for picture in maps], status, details)

    def masks(self, image: str | None, seed: float) -> tuple[Any, Any, str]:
        if image is None:
            return None, None, ""
        multiblock, hierarchical, stats = self.views.masks(image, _whole_number(seed, "seed"))
        return answer_picture(multiblock), answer_picture(hierarchical), stats_markdown(stats)

    def similarity(self, image: str | None, level: int, x: float | None, y: float | None) -> tuple[Any, str]:
        if image is None:
            return None, "no image yet"
        overlay, status = self.views.similarity(image, _whole_number(level, "level"), x, y)
        return answer_picture(overlay), status

    def neighbours(self, image: str | None, level: int, k: float) -> tuple[Any, str]:
        if image is None or not self.has_gallery:
            return [], "no image yet" if image is None else "no gallery"
        items, status = self.views.neighbours(image, _whole_number(level, "level"), _whole_number(k, "k"))
        return [(answer_picture(thumb), caption) for thumb, caption in items], status

    @staticmethod
    def select_point(evt: gr.SelectData) -> tuple[float, float]:
        return float(evt.index[0]), float(evt.index[1])

    def similarity_at(self, image: str | None, level: int, point: tuple[float, float] | None) -> tuple[Any, str]:
        return self.similarity(image, level, *(point or (None, None)))

    def similarity_of_new_image(self, image: str | None, level: int) -> tuple[Any, str, None]:
        return (*self.similarity(image, level, None, None), None)  # forget the old click


@dataclass
class InputPanel:
    image: gr.Image
    level: gr.Radio
    point: gr.State  # the clicked pixel, per session
    x: gr.Number  # /similarity takes the pixel as two hidden numbers
    y: gr.Number
    similarity_api: gr.Button
    k: gr.Slider
    status: gr.Markdown
    details: gr.JSON


@dataclass
class OutputPanel:
    pca_maps: list[gr.Image]
    similarity_map: gr.Image
    gallery_view: gr.Gallery
    neighbour_status: gr.Markdown
    seed: gr.Slider
    multiblock_view: gr.Image
    hierarchical_view: gr.Image
    mask_stats: gr.Markdown


def input_panel(runtime: Runtime, max_bytes: int) -> InputPanel:
    """Left column: image, examples, level, neighbour count, status, details."""
    levels, meta = runtime.levels, runtime.metadata
    image = gr.Image(label="Image: click a patch", type="filepath", image_mode=None, sources=["upload", "clipboard"],
                     height=320, elem_id="input-image")
    guard_uploads(image, max_bytes)
    gr.Examples(examples=[[str(p)] for p in example_files()], inputs=[image], label="Examples")
    level = gr.Radio(
        choices=[(f"level {k} ({meta.grid(k)[0]}x{meta.grid(k)[1]})", k) for k in levels],
        value=levels[0],
        label="Level for similarity and neighbours",
        elem_id="level",
    )
    point, x, y = gr.State(None), gr.Number(value=None, visible=False), gr.Number(value=None, visible=False)
    similarity_api = gr.Button(visible=False)
    k = gr.Slider(1, 16, value=8, step=1, label="neighbours")
    status = gr.Markdown("upload an image or pick an example", elem_id="status")
    with gr.Accordion("Features (JSON, as the /embed API returns them)", open=False):
        details = gr.JSON(label="details")
    return InputPanel(image, level, point, x, y, similarity_api, k, status, details)


def output_panel(runtime: Runtime, gallery: Gallery | None) -> OutputPanel:
    """Right column: PCA maps, similarity, neighbours, masks."""
    meta = runtime.metadata
    gr.Markdown("**Features**: first three principal components of each level's tokens as RGB")
    with gr.Row():
        pca_maps = [
            gr.Image(label=f"level {k} · {meta.grid(k)[0]}x{meta.grid(k)[1]} tokens", format="png", interactive=False,
                     elem_id=f"pca-level{k}", elem_classes=["pca-map"])
            for k in runtime.levels
        ]
    with gr.Row():
        similarity_map = gr.Image(label="cosine similarity to the selected patch", format="png", interactive=False,
                                  elem_id="similarity")
        gallery_view = gr.Gallery(label=f"nearest neighbours · {gallery.description if gallery else 'no gallery'}",
                                  columns=3, height=300, object_fit="contain", format="png", elem_id="neighbours")
    # own status line: a shared one shows whichever step ends last
    neighbour_status = gr.Markdown(elem_id="neighbour-status")
    gr.Markdown("**Masks** sampled for this model's patch grid (blue: context, colours: targets per level)")
    seed = gr.Slider(0, 1000, value=0, step=1, label="mask seed", elem_id="seed")
    with gr.Row():
        multiblock_view = gr.Image(label="multi-block", format="png", interactive=False, elem_classes=["mask-view"])
        hierarchical_view = gr.Image(label="hierarchical", format="png", interactive=False,
                                     elem_classes=["mask-view"])
    mask_stats = gr.Markdown(elem_id="mask-stats")
    return OutputPanel(pca_maps, similarity_map, gallery_view, neighbour_status, seed, multiblock_view,
                       hierarchical_view, mask_stats)


def wire(on: Handlers, inputs: InputPanel, outputs: OutputPanel, queue: dict[str, Any]) -> None:
    """A new image runs one chain: /embed, /masks, centre similarity, /neighbours; /similarity is a hidden button."""
    i, o = inputs, outputs
    embed, masks = _as_gradio_errors(on.embed), _as_gradio_errors(on.masks)
    similarity, neighbours = _as_gradio_errors(on.similarity), _as_gradio_errors(on.neighbours)
    similarity_at = _as_gradio_errors(on.similarity_at)
    embed_outputs = [*o.pca_maps, i.status, i.details]
    mask_io = ([i.image, o.seed], [o.multiblock_view, o.hierarchical_view, o.mask_stats])
    similarity_io = ([i.image, i.level, i.point], [o.similarity_map, i.status])
    neighbour_io = ([i.image, i.level, i.k], [o.gallery_view, o.neighbour_status])
    (
        i.image.change(embed, [i.image], embed_outputs, api_name="embed", **queue)
        .success(masks, *mask_io, api_name="masks", **queue)
        .success(_as_gradio_errors(on.similarity_of_new_image), [i.image, i.level],
                 [o.similarity_map, i.status, i.point], api_visibility="private", **queue)
        .success(neighbours, *neighbour_io, api_name="neighbours", **queue)
    )
    i.similarity_api.click(similarity, [i.image, i.level, i.x, i.y], [o.similarity_map, i.status],
                           api_name="similarity", **queue)
    i.image.select(on.select_point, None, i.point, api_visibility="private").success(
        similarity_at, *similarity_io, api_visibility="private", **queue
    )
    i.level.change(similarity_at, *similarity_io, api_visibility="private", **queue).success(
        neighbours, *neighbour_io, api_visibility="private", **queue
    )
    o.seed.release(masks, *mask_io, api_visibility="private", **queue)
    i.k.release(neighbours, *neighbour_io, api_visibility="private", **queue)


def build_app(
    runtime: Runtime,
    gallery: Gallery | None = None,
    max_upload_mb: float = 10.0,
    display_size: int = 256,
    title: str = "H-JEPA explorer",
    max_megapixels: float = DEFAULT_MAX_PIXELS / 1e6,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> gr.Blocks:
    """The app for ``runtime``; oversized uploads are refused undecoded, ``concurrency`` model calls at once."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    max_bytes = int(max_upload_mb * 2**20)
    views = Explorer(runtime, gallery, display_size=display_size, max_upload_bytes=max_bytes,
                  max_pixels=int(max_megapixels * 1e6))
    handlers = Handlers(views, gallery is not None, len(runtime.levels))
    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=DELETE_CACHE) as demo:
        source = "/".join(Path(runtime.source).parts[-3:])  # the run, not the home directory
        provenance = runtime.provenance()  # source and licence of an imported encoder
        gr.Markdown(f"## {title}\n`{source}` · {runtime.describe()}" + (f"\n\n{provenance}" if provenance else ""))
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                inputs = input_panel(runtime, max_bytes)
            with gr.Column(scale=2):
                outputs = output_panel(runtime, gallery)
        wire(handlers, inputs, outputs, {"concurrency_id": MODEL_QUEUE, "concurrency_limit": concurrency})
    return demo


def launch_app(
    demo: gr.Blocks,
    host: str = "127.0.0.1",
    port: int | None = 7860,
    max_upload_mb: float = 10.0,
    block: bool = True,
    quiet: bool = False,
) -> str:
    """Serve on ``host:port``, never tunnelled; returns the URL. ``block=False`` returns once up."""
    theme = gr.themes.Default(font=SYSTEM_FONTS, font_mono=MONO_FONTS)
    _, local_url, _ = demo.queue().launch(
        server_name=host,
        server_port=port,
        share=False,
        inbrowser=False,
        prevent_thread_lock=not block,
        show_error=True,
        max_file_size=int(max_upload_mb * 2**20),
        allowed_paths=[str(EXAMPLES_DIR)],
        ssr_mode=False,
        quiet=quiet,
        theme=theme,
        css=CSS,
    )
    return local_url
