"""``make demo`` / ``python -m hjepa.demo``: the quickstart end to end on the embedded default dataset.

Trains the ``fashion-mnist`` preset, then measures k-NN (k=20, T=0.07) top-1 of level-0 pooled target features on the
full 10k test set, against the same architecture at random initialisation, and writes both to ``RUN/demo.json``.
"""

from __future__ import annotations

import json
import sys
import time

import click
import torch

from hjepa.cli.errors import user_errors


def knn_top1(model: torch.nn.Module, cfg, train_bank: int, device: torch.device) -> dict:
    from hjepa.data import EvalTransform, build_dataset
    from hjepa.evaluation.features import dataset_arrays, extract_features, spread_subset
    from hjepa.evaluation.knn import knn_evaluate

    splits = {}
    for split in ("train", "test"):
        dataset = build_dataset(cfg.data.dataset, split, cfg.data.data_dir)
        images, labels = dataset_arrays(dataset)
        if split == "train":
            keep = spread_subset(train_bank, len(images))
            images, labels = images[keep], labels[keep]
        transform = EvalTransform(cfg.model.img_size, mean=dataset.mean, std=dataset.std)
        splits[split] = extract_features(
            lambda x: model.extract_features(x, 0)[1], images, labels, transform, 256, device, desc=f"k-NN {split}"
        )
    (train_f, train_l), (test_f, test_l) = splits["train"], splits["test"]
    result = knn_evaluate(train_f, train_l, test_f, test_l, ks=[20], temperature=0.07, num_classes=dataset.num_classes)
    return {"top1": result[20]["top1"], "top5": result[20]["top5"], "train_bank": len(train_f), "test": len(test_f)}


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

    with user_errors():
        cfg = load_config(config_name, list(overrides))
        start = time.perf_counter()
        result = train(cfg)
        train_seconds = time.perf_counter() - start
        device = resolve_device(cfg.train.device)
        trained = knn_top1(result.model.eval(), cfg, train_bank, device)
        torch.manual_seed(cfg.train.seed)
        baseline = knn_top1(build_model(cfg).to(device).eval(), cfg, train_bank, device)
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
