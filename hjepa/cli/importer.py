"""``hjepa-import``: a pretrained encoder (I-JEPA, Hugging Face, timm, seed H-JEPA) -> an hjepa encoder artifact."""

from __future__ import annotations

from pathlib import Path

import click

from hjepa.cli.errors import user_errors

SOURCE_FORMATS = ("auto", "hf-ijepa", "hjepa-seed", "ijepa", "timm")


@click.command("import")
@click.argument("source")
@click.option("--from", "source_format", type=click.Choice(SOURCE_FORMATS), default="auto", show_default=True,
              help="Source layout; auto recognises it from the keys.")
@click.option("--encoder", type=click.Choice(["target", "context"]), default="target", show_default=True,
              help="Which encoder of a training checkpoint (I-JEPA evaluates the target encoder).")
@click.option("--arch", default=None, help="Known architecture (sets the head count; checked against the weights).")
@click.option("--num-heads", type=int, default=None, help="Attention heads, when the weights cannot tell.")
@click.option("--levels", type=int, default=None, help="Hierarchy levels (2^k pooling); default: as deep as the grid "
              "allows, at most 4.")
@click.option("--head", type=click.Choice(["identity", "layernorm"]), default="identity", show_default=True,
              help="Level head: identity (features as the source evaluates them) or layernorm (the layer-normed "
                   "training target).")
@click.option("--mean", type=float, nargs=3, default=None, help="Normalisation mean R G B (default: the source's).")
@click.option("--std", type=float, nargs=3, default=None, help="Normalisation std R G B (default: the source's).")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Artifact directory (default imports/<source>-<encoder>).")
@click.option("--overwrite", is_flag=True, help="Replace an existing artifact at --out.")
@click.option("--download", is_flag=True, help="Fetch a known model (models/NAME.yaml) from its official URL.")
def main(
    source: str, source_format: str, encoder: str, arch: str | None, num_heads: int | None, levels: int | None,
    head: str, mean: tuple[float, float, float] | None, std: tuple[float, float, float] | None, out: Path | None,
    overwrite: bool, download: bool,
) -> None:
    """Convert SOURCE (a checkpoint file, a Hugging Face model directory or a known model name) into an encoder
    artifact (encoder.json + encoder.safetensors) for hjepa-export, hjepa-eval and hjepa-serve.

    Nothing is written unless every source tensor was converted and the result matches an independent reference
    forward of the source architecture at batch 1 and 4 on every level.
    """
    with user_errors():
        from hjepa.importers import ImportOptions, import_encoder

        options = ImportOptions(encoder=encoder, arch=arch, num_heads=num_heads, levels=levels, head=head,
                                mean=mean or None, std=std or None)
        import_encoder(source, out, options, source_format, overwrite, download, log=click.echo)


if __name__ == "__main__":
    main()
