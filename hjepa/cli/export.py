"""``hjepa-export``: a checkpoint's levels as verified ONNX files (and TensorRT engines, a Triton repository)."""

from __future__ import annotations

from pathlib import Path

import click

from hjepa.cli.errors import user_errors


@click.command("export")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--level", default="all", show_default=True, help="Level index (0 = patch tokens) or 'all'.")
@click.option("--format", "formats", multiple=True, default=("onnx",), show_default=True,
              help="onnx; trt (TensorRT engine, needs an NVIDIA GPU); triton (model repository); hjepa (encoder-only "
                   "artifact: encoder.safetensors + encoder.json, a SOURCE for export / eval / serve); levels (one "
                   "levels.onnx with tokens_K / pooled_K for every level: one encoder pass). Repeatable: "
                   "--format trt --format triton puts the engines in the Triton repository.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Output directory (default: exports/<run name>). A previous export there is replaced; "
                   "other files in it stop the export.")
@click.option("--batch", type=int, default=None,
              help="Verification batch (default export.verify_batch); the fixed batch with --static (default 1).")
@click.option("--dynamic/--static", default=True, show_default=True, help="Symbolic or fixed batch axis.")
@click.option("--half", is_flag=True, help="float16 weights (LayerNorm kept in float32); float32 inputs/outputs.")
@click.option("--int8", is_flag=True, help="onnxruntime dynamic int8 quantization (+ k-NN check in the manifest).")
@click.option("--opset", type=int, default=None, help="ONNX opset, 18..23 (default export.opset = 20).")
@click.option("--simplify", is_flag=True, help="Simplify the graph with onnxslim.")
@click.option("--img-size", type=int, default=None,
              help="Input size (default: trained size); a multiple of patch_size * 2^level. Sin-cos positions are "
                   "recomputed for the new grid; an imported learned table is resampled bicubically.")
@click.option("--uint8-input", is_flag=True, help="Take uint8 [B, S, S, 3] pixels and normalise inside the graph.")
@click.option("--fuse/--no-fuse", default=True, show_default=True,
              help="Write each attention block as one onnxruntime com.microsoft.Attention node (fp32/int8, no TensorRT "
                   "in the same export): faster on onnxruntime, not readable by other ONNX runtimes.")
def main(
    checkpoint: Path,
    level: str,
    formats: tuple[str, ...],
    out_dir: Path | None,
    batch: int | None,
    dynamic: bool,
    half: bool,
    int8: bool,
    opset: int | None,
    simplify: bool,
    img_size: int | None,
    uint8_input: bool,
    fuse: bool,
) -> None:
    """Export CHECKPOINT (a .pt file, a run directory or an encoder artifact) to OUT/level{K}.onnx and OUT/manifest.json
    (--format hjepa: OUT/encoder.safetensors + OUT/encoder.json).

    Every file is compared with PyTorch on onnxruntime (TensorRT engines with onnxruntime) before it is kept.
    """
    with user_errors():
        from hjepa.export import ExportOptions, export

        options = ExportOptions(
            formats=tuple(dict.fromkeys(formats)), batch=batch, dynamic=dynamic, half=half, int8=int8, opset=opset,
            simplify=simplify, img_size=img_size, uint8_input=uint8_input, fuse=fuse,
        )
        manifest = export(checkpoint, level, out_dir, options, log=click.echo)
    knn = [entry["int8_knn"] for entry in manifest["levels"].values() if entry["int8_knn"]]
    for result in knn:
        if "skipped" in result:
            click.echo(f"int8 k-NN check skipped: {result['skipped']}")


if __name__ == "__main__":
    main()
