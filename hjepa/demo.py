"""``make demo`` / ``python -m hjepa.demo``: the quickstart end to end on the embedded default dataset.

Trains the ``fashion-mnist`` preset, then per level: k-NN (k=20, T=0.07) top-1 of pooled target features on the full
test split with the full train split as the bank (``hjepa-eval knn CKPT --level all``) and the dense probes on
mosaics (``hjepa-eval dense CKPT``), next to random initialisation and raw pixels; all of it goes to ``RUN/demo.json``.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from hjepa.cli.errors import user_errors
from hjepa.files import atomic_write_text

DENSE_TRAIN_MOSAICS, DENSE_TEST_MOSAICS = 2000, 1000


def _knn_row(report: dict, level: str = "0") -> dict:
    """k-NN top-1 / top-5 at ``level`` with the bank and test sizes, from an evaluation report."""
    result = report["levels"][level]["knn"]["20"]  # reports are JSON-shaped: string keys
    return {"top1": result["top1"], "top5": result["top5"], "train_bank": report["splits"]["train"],
            "test": report["splits"]["test"]}


def _per_level(knn: dict, dense: dict) -> dict[str, dict[str, Any]]:
    """``{level: {"knn_top1", "tile_top1", "miou"}}`` of one feature source (k-NN only where it was measured)."""
    rows = {}
    for level, entry in dense["levels"].items():
        scores = entry["dense"]
        row = {"knn_top1": knn["levels"][level]["knn"]["20"]["top1"] if level in knn["levels"] else None,
               "tile_top1": scores.get("tile_top1"), "miou": scores["miou"], "grid": scores["grid"]}
        rows[level] = row
    return rows


def _evaluate(checkpoint: str, cfg: Any, train_bank: int | None, dense_mosaics: tuple[int, int]) -> dict:
    """Pooled k-NN at every level and the dense probes, each with the pixel and random-init baselines. Where the
    run trained under CPU bf16 autocast, the encoders are evaluated under it too (2-3x faster extraction)."""
    from hjepa.device import amp_enabled, resolve_device
    from hjepa.evaluation.baselines import evaluate_with_baselines, random_init_like
    from hjepa.evaluation.dense import DenseOptions, evaluate_dense
    from hjepa.evaluation.run import evaluate
    from hjepa.evaluation.sources import in_bf16, resolve_source

    device = cfg.train.device
    source = resolve_source(checkpoint, device=device)
    random_init = random_init_like(source, device)
    torch_device = resolve_device(device)
    bf16 = torch_device.type == "cpu" and amp_enabled(torch_device, cfg.train.amp, cfg.train.cpu_amp)
    if bf16:
        source, random_init = in_bf16(source), in_bf16(random_init)
    # Fixed protocol: k=20, T=0.07, every level, the whole test split.
    protocol = {"data_dir": cfg.data.data_dir, "levels": "all", "protocols": ("knn",), "ks": [20],
                "temperature": 0.07, "train_limit": train_bank, "cache_dir": None}
    knn = evaluate_with_baselines(source, cfg.data.dataset, baselines=("pixels",), **protocol)
    knn["baselines"]["random-init"] = evaluate(random_init, cfg.data.dataset, **protocol)
    options = DenseOptions(dataset=cfg.data.dataset, data_dir=cfg.data.data_dir, train_mosaics=dense_mosaics[0],
                           test_mosaics=dense_mosaics[1])
    dense = evaluate_dense(source, options, baselines=("pixels", "random-init"), random_init=lambda: random_init)
    return {"knn": knn, "dense": dense, "precision": "bf16" if bf16 else "fp32"}


def _print_levels(levels: dict[str, dict[str, dict]]) -> None:
    click.echo("per level (k-NN: pooled, full test split; dense: test mosaics, 2x2 and 4x4 tiles):")
    click.echo(f"  {'features':<12} {'level':>5} {'grid':>5} {'k-NN':>7} {'tile top-1':>10} {'mIoU':>7}")
    for name, rows in levels.items():
        for level, row in rows.items():
            knn = "-" if row["knn_top1"] is None else f"{row['knn_top1']:.2f}"
            grid = "x".join(map(str, row["grid"]))
            click.echo(f"  {name:<12} {level:>5} {grid:>5} {knn:>7} {row['tile_top1']:>10.2f} {row['miou']:>7.2f}")


@click.command()
@click.option("--config", "config_name", default="fashion-mnist", show_default=True)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
@click.option("--train-bank", default=None, type=int, help="Train images in the k-NN memory bank (default: all).")
@click.option("--dense-mosaics", nargs=2, type=int, default=(DENSE_TRAIN_MOSAICS, DENSE_TEST_MOSAICS),
              show_default=True, metavar="TRAIN TEST", help="Mosaics the dense probes are fitted and scored on.")
def main(config_name: str, overrides: tuple[str, ...], train_bank: int | None,
         dense_mosaics: tuple[int, int]) -> None:
    """Train the quickstart preset and compare it per level with random initialisation and raw pixels."""
    from hjepa.config import load_config
    from hjepa.train import train

    with user_errors():
        cfg = load_config(config_name, list(overrides))
        start = time.perf_counter()
        result = train(cfg, overwrite=True)  # the demo always trains from scratch
        train_seconds = time.perf_counter() - start
        reports = _evaluate(str(result.out_dir / "checkpoints" / "last.pt"), cfg, train_bank, dense_mosaics)
    knn, dense = reports["knn"], reports["dense"]
    # The headline level: the coarsest, the hierarchy's whole-image descriptor (with merge heads, the best pooled
    # k-NN level on validation: docs/learning.md, eighth screen). Raw pixels have level 0 only.
    headline = str(cfg.model.num_levels - 1)
    trained, baseline = _knn_row(knn, headline), _knn_row(knn["baselines"]["random-init"], headline)
    pixels = _knn_row(knn["baselines"]["pixels"])
    levels = {"trained": _per_level(knn, dense),
              "random init": _per_level(knn["baselines"]["random-init"], dense["baselines"]["random-init"]),
              "raw pixels": _per_level(knn["baselines"]["pixels"], dense["baselines"]["pixels"])}
    best_miou = {name: max(row["miou"] for row in rows.values()) for name, rows in levels.items()}
    summary = {
        "config": cfg.name, "run": str(result.out_dir), "steps": cfg.train.steps, "objective": cfg.model.objective,
        "num_levels": cfg.model.num_levels, "grid": dense["levels"]["0"]["dense"]["grid"],
        "train_seconds": round(train_seconds, 1), "total_seconds": round(time.perf_counter() - start, 1),
        "final_loss": result.final_loss,
        "knn_level": int(headline), "knn_trained": trained, "knn_random_init": baseline, "knn_pixels": pixels,
        "gain_points": round(trained["top1"] - baseline["top1"], 2),
        "over_pixels_points": round(trained["top1"] - pixels["top1"], 2),
        "levels": levels, "best_miou": best_miou,
        "miou_over_baselines_points": round(best_miou["trained"] - max(best_miou["random init"],
                                                                      best_miou["raw pixels"]), 2),
        "dense_data": dense["data"], "dense_splits": dense["splits"], "eval_precision": reports["precision"],
    }
    atomic_write_text(result.out_dir / "demo.json", json.dumps(summary, indent=2))
    click.echo(f"\nrun: {result.out_dir} ({cfg.train.steps} steps in {train_seconds:.0f} s, "
               f"{cfg.model.num_levels} levels over a {'x'.join(map(str, summary['grid']))} grid)")
    click.echo(f"k-NN top-1 (k=20, T=0.07, level {headline} pooled, {trained['test']} test images, "
               f"{trained['train_bank']} in bank):")
    click.echo(f"  trained      {trained['top1']:6.2f}%")
    click.echo(f"  random init  {baseline['top1']:6.2f}%   (trained {summary['gain_points']:+.2f} points)")
    click.echo(f"  raw pixels   {pixels['top1']:6.2f}%   (trained {summary['over_pixels_points']:+.2f} points)")
    _print_levels(levels)
    click.echo(f"best-level mIoU: trained {best_miou['trained']:.2f}, random init {best_miou['random init']:.2f}, "
               f"raw pixels {best_miou['raw pixels']:.2f} ({summary['miou_over_baselines_points']:+.2f} points)")
    click.echo(f"next: hjepa-export {result.out_dir}/checkpoints/last.pt --level all --format onnx")
    click.echo(f"      hjepa-eval dense {result.out_dir}/checkpoints/last.pt --baseline pixels --baseline random-init")
    click.echo(f"      hjepa-serve {result.out_dir}/checkpoints/last.pt")


if __name__ == "__main__":
    sys.exit(main())
