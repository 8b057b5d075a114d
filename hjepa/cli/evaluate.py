"""``hjepa-eval``: k-NN and linear-probe evaluation of a checkpoint, an exported model or a random-init baseline."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import click

from hjepa.cli.errors import user_errors

DATASET_HELP = "fashion-mnist | digits | cifar100 | imagenet100 | imagefolder"


def _source_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Shared: what to evaluate, on which data, at which levels, the cache."""
    options = [
        click.argument("source", required=False),
        click.option("--random-init", "random_init", metavar="CONFIG", default=None,
                     help="Evaluate an untrained model built from CONFIG (preset or YAML; seed 0) instead of SOURCE."),
        click.option("--baseline", "baselines", multiple=True, type=click.Choice(["pixels", "random-init"]),
                     help="Add a baseline row, repeatable: pixels (the same preprocessing, no encoder) or random-init "
                          "(SOURCE's architecture, untrained); same splits and protocol."),
        click.option("--dataset", required=True, help=DATASET_HELP),
        click.option("--data-dir", default=None, help="Dataset location (default: the dataset's own)."),
        click.option("--download", is_flag=True, help="Download the dataset if it can fetch itself (cifar100)."),
        click.option("--level", "levels", default="all", show_default=True, help="Level K, a list '0,2', or 'all'."),
        click.option("--feature", type=click.Choice(["pooled", "grid"]), default="pooled", show_default=True,
                     help="pooled: the mean of the level-k cells; grid: the level-k cells flattened in raster order "
                          "(keeps the layout the mean discards; N_k x D values per image)."),
        click.option("--out", default=None, type=click.Path(dir_okay=False), help="Write the JSON report here."),
        click.option("--train-limit", type=int, default=None, metavar="N", help="Use N train images (spread evenly)."),
        click.option("--test-limit", type=int, default=None, metavar="N", help="Use N test images (spread evenly)."),
        click.option("--cache-dir", default=".cache/features", show_default=True, help="Feature cache folder."),
        click.option("--no-cache", is_flag=True, help="Neither read nor write cached features."),
        click.option("--batch-size", type=int, default=None, help="Images per encoder batch (default 256)."),
        click.option("--backend", default="auto", show_default=True,
                     help="auto | torch | onnxruntime[:cpu|cuda|tensorrt] | tensorrt."),
        click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda[:N]."),
        click.option("--progress/--no-progress", default=True, help="Show progress bars."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _knn_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option("--temperature", type=float, default=None, help="k-NN temperature T (default 0.07).")(func)
    return click.option("--k", "ks", type=int, multiple=True, help="k of the k-NN vote, repeatable (default 20).")(func)


def _probe_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option("--probe-epochs", type=int, default=None, help="Linear-probe epochs (default 100).")(func)
    return click.option("--classifier", type=click.Choice(["sgd", "logreg"]), default="sgd", show_default=True,
                        help="sgd: learning-rate sweep picked on a validation split; logreg: scikit-learn.")(func)


def _run(protocols: tuple[str, ...], source: str | None, ks: tuple[int, ...] = (), **options: Any) -> None:
    """Evaluate; print a summary, the table and where the report went."""
    from hjepa.evaluation.baselines import comparison_rows, evaluate_with_baselines
    from hjepa.evaluation.report import format_table, report_rows

    if (source is None) == (options.get("random_init") is None):
        raise click.UsageError("give either SOURCE (checkpoint, .onnx, export directory, .engine) or "
                               "--random-init CONFIG")
    no_cache, cache_dir = options.pop("no_cache"), options.pop("cache_dir")
    # warnings as one line each, not a FILE:LINE pair pointing into torch
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        try:
            with user_errors():
                report = evaluate_with_baselines(source, protocols=protocols, ks=list(ks) or None,
                                                 cache_dir=None if no_cache else cache_dir, **options)
        finally:
            for message in dict.fromkeys(str(warning.message) for warning in caught):
                click.echo(f"warning: {message}", err=True)
    splits = report["splits"]
    click.echo(f"source: {report['source']}  backend: {report['backend']}  dataset: {report['dataset']} "
               f"(train {splits['train']}, test {splits['test']}, {report['num_classes']} classes)")
    for level, per_split in report["features"].items():
        parts = [f"{split} {info['cache']} ({info['seconds']:.2f} s)" for split, info in per_split.items()]
        click.echo(f"features level {level}: " + ", ".join(parts))
    baselines = report.get("baselines") or {}
    click.echo(format_table(comparison_rows(report, "random-init" if options.get("random_init") else "model")
                            if baselines else report_rows(report)))
    for level, results in report["levels"].items():
        for k, accuracy in results.get("knn", {}).items():
            if "k_used" in accuracy:
                click.echo(f"note: level {level} knn@{k} used k={accuracy['k_used']} (the train split's size)")
    timings = report["timings"]
    click.echo("time: " + "  ".join(f"{name[:-2]} {seconds:.2f} s" for name, seconds in timings.items()))
    if options.get("out"):
        click.echo(f"report: {options['out']}")


@click.group("eval")
def main() -> None:
    """Evaluate frozen HJEPA features: SOURCE is a checkpoint (.pt or run directory), an exported .onnx file or
    export directory, or a TensorRT .engine; --random-init CONFIG gives the untrained baseline."""


@main.command("knn")
@_source_options
@_knn_options
def knn(source: str | None, **options: Any) -> None:
    """Weighted k-NN (cosine, exp(sim/T) votes) of level-k features (pooled, or the grid): top-1 / top-5 per k."""
    _run(("knn",), source, **options)


@main.command("linear-probe")
@_source_options
@_probe_options
def linear_probe(source: str | None, **options: Any) -> None:
    """A linear classifier on frozen level-k features (pooled, or the grid): top-1 / top-5."""
    _run(("linear",), source, **options)


@main.command("all")
@_source_options
@_knn_options
@_probe_options
def run_all(source: str | None, **options: Any) -> None:
    """k-NN and linear probe, one table per run with a row per level."""
    _run(("knn", "linear"), source, **options)


@main.command("dense")
@click.argument("source", required=False)
@click.option("--random-init", "random_init", metavar="CONFIG", default=None,
              help="Evaluate an untrained model built from CONFIG instead of SOURCE.")
@click.option("--baseline", "baselines", multiple=True, type=click.Choice(["pixels", "random-init"]),
              help="Add a baseline row, repeatable (same data and probes).")
@click.option("--dataset", default="fashion-mnist", show_default=True,
              help="fashion-mnist | digits | cifar100 (as mosaics) | voc (a VOC-layout folder in --data-dir).")
@click.option("--data-dir", default=None, help="Dataset location (default: the dataset's own).")
@click.option("--level", "levels", default="all", show_default=True, help="Level K, a list '0,2', or 'all'.")
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="Write the JSON report here.")
@click.option("--train-mosaics", type=int, default=4000, show_default=True, help="Mosaics the probes are fitted on.")
@click.option("--test-mosaics", type=int, default=1000, show_default=True, help="Mosaics the probes are scored on.")
@click.option("--layout", "layouts", type=int, multiple=True, help="Tiles per side, repeatable (default 2 and 4).")
@click.option("--split", type=click.Choice(["test", "val"]), default="test", show_default=True,
              help="val: score on a validation split carved from train (for choosing settings).")
@click.option("--seed", type=int, default=0, show_default=True, help="Mosaic and probe seed.")
@click.option("--limit", "voc_limit", type=int, default=None, help="VOC: the first N images of each split.")
@click.option("--batch-size", type=int, default=256, show_default=True, help="Images per encoder batch.")
@click.option("--backend", default="auto", show_default=True,
              help="auto | torch | onnxruntime[:cpu|cuda|tensorrt] | tensorrt.")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda[:N].")
def dense(source: str | None, random_init: str | None, baselines: tuple[str, ...], levels: str, out: str | None,
          backend: str, device: str, layouts: tuple[int, ...], **options: Any) -> None:
    """Per-level dense probes on the level-k grids: linear segmentation mIoU and tile top-1 (docs/dense.md)."""
    from hjepa.evaluation.dense import DenseOptions, dense_rows, evaluate_dense
    from hjepa.evaluation.report import check_report_path, format_table, write_report
    from hjepa.evaluation.sources import resolve_source
    from hjepa.inference.artifacts.levels import parse_levels

    if (source is None) == (random_init is None):
        raise click.UsageError("give either SOURCE (checkpoint, .onnx, export directory, .engine) or "
                               "--random-init CONFIG")
    with user_errors():
        if out is not None:
            check_report_path(out)
        dense_options = DenseOptions(layouts=layouts or (2, 4), **options)
        evaluated = resolve_source(source, random_init=random_init, backend=backend, device=device)

        def random_init_baseline():
            from hjepa.evaluation.baselines import random_init_like

            return random_init_like(evaluated, device)

        chosen = parse_levels(levels, evaluated.levels, evaluated.name)
        report = evaluate_dense(evaluated, dense_options, chosen, baselines, random_init_baseline)
        if out is not None:
            write_report(out, report)
    click.echo(f"source: {report['source']}  backend: {report['backend']}  dense data: {report['data']} "
               f"(train {report['splits']['train']}, test {report['splits']['test']}, "
               f"{report['num_classes']} classes incl. background)")
    click.echo(format_table(dense_rows(report, "random-init" if random_init else "model")))
    if out is not None:
        click.echo(f"report: {out}")


if __name__ == "__main__":
    main()
