"""``hjepa-serve``: explore a checkpoint or an exported model in the browser (Gradio, bound to 127.0.0.1)."""

from __future__ import annotations

import os

import click

from hjepa.cli.errors import user_errors

BACKEND_CHOICES = (
    "auto",
    "torch",
    "onnxruntime",
    "onnxruntime:cpu",
    "onnxruntime:cuda",
    "onnxruntime:tensorrt",
    "tensorrt",
)  # equals hjepa.inference.BACKENDS (tested), so --help needs no torch


@click.command("serve")
@click.argument("source", type=click.Path(path_type=str))
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Interface to bind; 0.0.0.0 exposes the app to your network."
)
@click.option(
    "--port",
    default=7860,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to serve on (0: the first free one from 7860).",
)
@click.option(
    "--gallery",
    "gallery_source",
    default=None,
    metavar="DIR|DATASET",
    help="Neighbour gallery: an hjepa-embed output folder (searched, not re-embedded), a folder of images or a "
    "dataset name (its test split). "
    "Default: the model's dataset test split, else the shipped examples.",
)
@click.option(
    "--gallery-size",
    default=500,
    show_default=True,
    type=click.IntRange(1),
    help="Images in the gallery (an even spread over the split).",
)
@click.option("--no-gallery", is_flag=True, help="Start without nearest neighbours.")
@click.option("--data-dir", default=None, help="Where the gallery dataset lives (as hjepa-eval --data-dir).")
@click.option(
    "--cache-dir",
    default=".cache/features",
    show_default=True,
    help="Where gallery features are cached ('' disables the cache).",
)
@click.option(
    "--backend",
    type=click.Choice(BACKEND_CHOICES),
    default="auto",
    show_default=True,
    help="Runtime; onnxruntime:cpu|cuda|tensorrt forces an execution provider.",
)
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda[:N]")
@click.option(
    "--max-upload-mb",
    default=10.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Uploads larger than this are refused with a message.",
)
@click.option(
    "--max-megapixels",
    default=40.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Pictures of more pixels are refused with a message before they are decoded (JPEGs are decoded reduced).",
)
@click.option(
    "--concurrency",
    default=2,
    show_default=True,
    type=click.IntRange(1),
    help="Model computations run at once, over all endpoints and sessions; the rest wait in one queue.",
)
def main(
    source: str,
    host: str,
    port: int,
    gallery_source: str | None,
    gallery_size: int,
    no_gallery: bool,
    data_dir: str | None,
    cache_dir: str,
    backend: str,
    device: str,
    max_upload_mb: float,
    max_megapixels: float,
    concurrency: int,
) -> None:
    """Serve SOURCE (a checkpoint .pt or run directory, an .onnx file, an export directory or a TensorRT .engine)
    as a Gradio app: masks, per-level PCA feature maps, patch similarity and nearest neighbours.

    The app is never shared through a public tunnel and makes no outside requests; its functions are also an API
    (/embed, /masks, /similarity, /neighbours) for gradio_client.
    """
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    with user_errors():
        from hjepa.serve import build_gallery, open_runtime

        runtime = open_runtime(source, backend=backend, device=device)
        click.echo(f"model: {runtime.describe()}")
        gallery = None
        if not no_gallery:
            gallery = build_gallery(runtime, gallery_source, gallery_size, data_dir, cache_dir or None)
            click.echo(f"gallery: {gallery.description}; preparing it at levels {runtime.levels}")
            for level in runtime.levels:  # now, not on the first request
                gallery.warm(runtime, level)
        from hjepa.serve.app import build_app, launch_app

        demo = build_app(runtime, gallery, max_upload_mb=max_upload_mb, max_megapixels=max_megapixels,
                         concurrency=concurrency)
    try:
        url = launch_app(demo, host=host, port=port or None, max_upload_mb=max_upload_mb, block=False, quiet=True)
    except OSError:  # "Cannot find empty port", also for a foreign address
        where = f"{host}:{port}" if port else f"{host} (ports 7860 and up)"
        raise click.ClickException(
            f"cannot serve on {where}: the port is in use, or the address is not one of this machine's; "
            "choose another --port (0: the first free one from 7860) or --host"
        ) from None
    click.echo(f"serving on {url} (Ctrl+C to stop)")
    try:
        demo.block_thread()
    finally:
        demo.close()


if __name__ == "__main__":
    main()
