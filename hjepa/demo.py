"""``make demo`` / ``python -m hjepa.demo``: the quickstart end to end on the embedded default dataset.

Trains the ``fashion-mnist`` preset, then measures k-NN (k=20, T=0.07) top-1 of level-0 pooled target features on the
full test split with the full train split as the memory bank (the protocol of ``hjepa-eval knn CKPT --level 0``,
through the same code), next to the same architecture at random initialisation and raw pixels through the same
preprocessing, and writes all three to ``RUN/demo.json``.
"""

from __future__ import annotations

import json
import sys
import time

import click

from hjepa.cli.errors import user_errors


def _knn_row(report: dict) -> dict:
    """k-NN top-1 / top-5 at level 0 with the bank and test sizes, from an evaluation report."""
    result = report["levels"]["0"]["knn"]["20"]  # reports are JSON-shaped: string keys
    return {"top1": result["top1"], "top5": result["top5"], "train_bank": report["splits"]["train"],
            "test": report["splits"]["test"]}


@click.command()
@click.option("--config", "config_name", default="fashion-mnist", show_default=True)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
@click.option("--train-bank", default=None, type=int, help="Train images in the k-NN memory bank (default: all).")
def main(config_name: str, overrides: tuple[str, ...], train_bank: int | None) -> None:
    """Train the quickstart preset and compare its k-NN accuracy with random initialisation and raw pixels."""
    from hjepa.config import load_config
    from hjepa.evaluation.baselines import evaluate_with_baselines
    from hjepa.train import train

    with user_errors():
        cfg = load_config(config_name, list(overrides))
        start = time.perf_counter()
        result = train(cfg, overwrite=True)  # the demo always trains from scratch
        train_seconds = time.perf_counter() - start
        # The demo's protocol is fixed: k=20, T=0.07, level 0, the whole test split (the run's config is untouched).
        report = evaluate_with_baselines(
            result.out_dir / "checkpoints" / "last.pt", cfg.data.dataset, baselines=("random-init", "pixels"),
            data_dir=cfg.data.data_dir, levels=[0], protocols=("knn",), ks=[20], temperature=0.07,
            train_limit=train_bank, cache_dir=None, device=cfg.train.device,
        )
    trained, baseline = _knn_row(report), _knn_row(report["baselines"]["random-init"])
    pixels = _knn_row(report["baselines"]["pixels"])
    summary = {
        "config": cfg.name,
        "run": str(result.out_dir),
        "steps": cfg.train.steps,
        "objective": cfg.model.objective,
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(time.perf_counter() - start, 1),
        "final_loss": result.final_loss,
        "knn_trained": trained,
        "knn_random_init": baseline,
        "knn_pixels": pixels,
        "gain_points": round(trained["top1"] - baseline["top1"], 2),
        "over_pixels_points": round(trained["top1"] - pixels["top1"], 2),
    }
    (result.out_dir / "demo.json").write_text(json.dumps(summary, indent=2))
    click.echo(f"\nrun: {result.out_dir} ({cfg.train.steps} steps in {train_seconds:.0f} s)")
    click.echo(f"k-NN top-1 (k=20, T=0.07, level 0, {trained['test']} test images, {trained['train_bank']} in bank):")
    click.echo(f"  trained      {trained['top1']:6.2f}%")
    click.echo(f"  random init  {baseline['top1']:6.2f}%   (trained {summary['gain_points']:+.2f} points)")
    click.echo(f"  raw pixels   {pixels['top1']:6.2f}%   (trained {summary['over_pixels_points']:+.2f} points)")
    click.echo(f"next: hjepa-export {result.out_dir}/checkpoints/last.pt --level all --format onnx")
    click.echo(f"      hjepa-eval all {result.out_dir}/checkpoints/last.pt --dataset {cfg.data.dataset} "
               "--baseline pixels --baseline random-init")
    click.echo(f"      hjepa-serve {result.out_dir}/checkpoints/last.pt")


if __name__ == "__main__":
    sys.exit(main())
