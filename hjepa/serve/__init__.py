"""Serving: ``open_runtime``, feature maps, a gallery and ``build_app`` (Gradio loads only when used)."""

from hjepa.inference import (
    BACKENDS,
    Runtime,
    RuntimeMetadata,
    RuntimeSourceError,
    RuntimeUnavailableError,
    open_runtime,
)
from hjepa.inference.runtimes.images import ImageError
from hjepa.inference.runtimes.runtime_torch import TorchRuntime
from hjepa.serve.gallery import Gallery, Neighbour, build_gallery
from hjepa.serve.maps import colourise, cosine_similarity_map, pca_rgb, similarity_overlay, upscale_nearest
from hjepa.serve.views import Explorer

__all__ = [
    "BACKENDS",
    "Gallery",
    "ImageError",
    "Neighbour",
    "Runtime",
    "RuntimeMetadata",
    "RuntimeSourceError",
    "RuntimeUnavailableError",
    "TorchRuntime",
    "Explorer",
    "build_app",
    "build_gallery",
    "colourise",
    "cosine_similarity_map",
    "launch_app",
    "open_runtime",
    "pca_rgb",
    "similarity_overlay",
    "upscale_nearest",
]


def __getattr__(name: str):  # Gradio on first use only
    if name in ("build_app", "launch_app"):
        from hjepa.serve import app

        return getattr(app, name)
    raise AttributeError(f"module 'hjepa.serve' has no attribute {name!r}")
