"""``hjepa-embed``: run an encoder over an image collection into Parquet shards (+ a FAISS index), resumably."""

from __future__ import annotations

import json

import click

from hjepa.cli.errors import user_errors
from hjepa.cli.serve import BACKEND_CHOICES


@click.command("embed")
@click.argument("source", type=click.Path(path_type=str))
@click.argument("input_", metavar="INPUT")
@click.option("--out", required=True, type=click.Path(path_type=str), help="Output folder (Parquet shards, manifest).")
@click.option("--level", "levels", default="all", show_default=True, help="Level K, a list '0,2', or 'all'.")
@click.option("--grid", is_flag=True, help="Also write each level's token grid (level{K}_grid, [N_k * D] floats).")
@click.option("--backend", type=click.Choice(BACKEND_CHOICES), default="auto", show_default=True, help="Runtime.")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda[:N].")
@click.option("--batch-size", type=int, default=64, show_default=True, help="Images per encoder batch.")
@click.option("--workers", type=int, default=None, help="Decoding processes (default: CPU cores - 1, at most 8).")
@click.option("--shard-size", type=int, default=10_000, show_default=True, help="Rows per Parquet shard.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: this machine; ray: Ray Data on the cluster at RAY_ADDRESS (or a local one).")
@click.option("--ray-actors", type=int, default=None, help="Ray engine: encoder actors (default: one per GPU or 2).")
@click.option("--gpus-per-actor", type=float, default=0.0, show_default=True, help="Ray engine: GPUs per actor.")
@click.option("--resume", is_flag=True, help="Continue the job in --out; finished shards are kept as they are.")
@click.option("--overwrite", is_flag=True, help="Replace the previous job in --out.")
@click.option("--index", is_flag=True, help="Build a FAISS index per level (exact up to 1M rows, IVF-PQ above).")
@click.option("--split", default="train", show_default=True, help="Split when INPUT is a dataset name.")
@click.option("--data-dir", default=None, help="Dataset location when INPUT is a dataset name.")
@click.option("--max-megapixels", type=float, default=100.0, show_default=True,
              help="Pictures over this are skipped (listed in errors.jsonl) before they are decoded.")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar (img/s, ETA).")
def main(source: str, input_: str, **options: object) -> None:
    """Embed INPUT with SOURCE into --out DIR.

    SOURCE: anything hjepa-eval takes (checkpoint, encoder artifact, export folder, .onnx, .engine). INPUT: a folder
    (recursive; ids are paths relative to it), a .txt or .parquet list of paths, or a dataset name (ids are indices).
    Writes DIR/part-*.parquet (id, level{K}), DIR/manifest.json, DIR/errors.jsonl (skipped files and why).
    """
    with user_errors():
        from hjepa.embed import EmbedOptions, embed_collection
        from hjepa.embed.options import default_workers

        megapixels = float(options.pop("max_megapixels"))
        if megapixels <= 0:
            raise click.BadParameter(f"must be > 0, got {megapixels}", param_hint="--max-megapixels")
        workers = options.pop("workers")
        summary = embed_collection(EmbedOptions(
            source=source, input=input_, max_pixels=int(megapixels * 1e6),
            workers=default_workers() if workers is None else int(workers), **options,
        ))
    reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(summary["skipped_by_reason"].items()))
    click.echo(f"embedded {summary['rows']} of {summary['inputs']} inputs into {summary['out']} "
               f"({summary['shards']} shards, {summary['shards_run']} run now"
               f"{', resumed' if summary['resumed'] else ''}; {summary['engine']} engine, {summary['backend']}) "
               f"in {summary['seconds']:.1f} s")
    click.echo(f"skipped {summary['skipped']}" + (f" ({reasons}); see errors.jsonl" if reasons else ""))
    if "index" in summary:
        kinds = {level: entry["kind"] for level, entry in summary["index"]["levels"].items()}
        click.echo(f"index: {json.dumps(kinds)} over {summary['index']['rows']} rows")


if __name__ == "__main__":
    main()
