"""``make demo`` / ``python -m hjepa.demo``: the quickstart end to end on the embedded default dataset.

Trains the ``fashion-mnist`` preset, then measures k-NN (k=20, T=0.07) top-1 of level-0 pooled target features on the
full 10k test set, against the same architecture at random initialisation, and writes both to ``RUN/demo.json``.
"""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING

import click
import torch

from hjepa.cli.errors import user_errors

if TYPE_CHECKING:
    from hjepa.train.knn_monitor import KnnMonitor


def knn_top1(model: torch.nn.Module, monitor: KnnMonitor) -> dict:
    """k-NN (k=20, T=0.07) top-1 / top-5 of level-0 pooled target features, with the bank and test sizes."""
    result = monitor(model.eval(), level=0)[20]
    bank, test = monitor.sizes
    return {"top1": result["top1"], "top5": result["top5"], "train_bank": bank, "test": test}


@click.command()
@click.option("--config", "config_name", default="fashion-mnist", show_default=True)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
@click.option("--train-bank", default=10000, show_default=True, help="Train images in the k-NN memory bank.")
def main(config_name: str, overrides: tuple[str, ...], train_bank: int) -> None:
    """Train the quickstart preset and compare its k-NN accuracy with random initialisation."""
    from hjepa.config import load_config
    from hjepa.device import resolve_device
    from hjepa.models import build_model
    from hjepa.train import train
    from hjepa.train.knn_monitor import KnnMonitor

    with user_errors():
        cfg = load_config(config_name, list(overrides))
        start = time.perf_counter()
        result = train(cfg, overwrite=True)  # the demo always trains from scratch
        train_seconds = time.perf_counter() - start
        device = resolve_device(cfg.train.device)
        # The demo's protocol is fixed: k=20, T=0.07, the whole test split (the run's saved config is untouched).
        cfg.eval.knn_k, cfg.eval.knn_temperature = [20], 0.07
        monitor = KnnMonitor(cfg, device, train_samples=train_bank, test_samples=None, progress=True)
        trained = knn_top1(result.model, monitor)
        torch.manual_seed(cfg.train.seed)
        baseline = knn_top1(build_model(cfg).to(device), monitor)
    summary = {
        "config": cfg.name,
        "run": str(result.out_dir),
        "steps": cfg.train.steps,
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(time.perf_counter() - start, 1),
        "final_loss": result.final_loss,
        "knn_trained": trained,
        "knn_random_init": baseline,
        "gain_points": round(trained["top1"] - baseline["top1"], 2),
    }
    (result.out_dir / "demo.json").write_text(json.dumps(summary, indent=2))
    click.echo(f"\nrun: {result.out_dir} ({cfg.train.steps} steps in {train_seconds:.0f} s)")
    click.echo(f"k-NN top-1 (k=20, T=0.07, level 0, {trained['test']} test images, {trained['train_bank']} in bank):")
    click.echo(f"  trained      {trained['top1']:6.2f}%")
    click.echo(f"  random init  {baseline['top1']:6.2f}%   (gain {summary['gain_points']:+.2f} points)")
    click.echo(f"next: hjepa-export {result.out_dir}/checkpoints/last.pt --level all --format onnx")
    click.echo(f"      hjepa-eval all {result.out_dir}/checkpoints/last.pt --dataset {cfg.data.dataset}")
    click.echo(f"      hjepa-serve {result.out_dir}/checkpoints/last.pt")


if __name__ == "__main__":
    sys.exit(main())
