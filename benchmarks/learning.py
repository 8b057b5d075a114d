"""Learning curves: k-NN top-1 on a validation split carved from train vs training CPU-minutes, per objective.

Each run trains a preset with the online k-NN monitor on the validation split (``train.knn_split=val``: the bank
from 5/6 of train, the queries from the held-out 1/6, never the test split) every ``--knn-every`` steps, and the
curve is read back from the run's ``metrics.jsonl`` (wall seconds from the records' timestamps, minus the monitor's
own time). The raw-pixel row is the same k-NN on the same bank and queries with no encoder.

    python benchmarks/learning.py --run masked=fashion-mnist:model.objective=masked \
        --run multiview=fashion-mnist --knn-every 100          # trains both, then writes the JSON and the PNG
    python benchmarks/learning.py --collect masked=runs/learning/masked --collect ...   # only read finished runs

Writes ``benchmarks/results/learning.json`` (or ``--name``) and ``docs/learning_curve.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from common import print_table, write_json  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def pixel_knn(cfg, train_samples: int | None, test_samples: int | None) -> float:
    """k-NN (k=20, T=0.07) top-1 of centred raw pixels on the monitor's own validation bank and queries."""
    import torch

    from hjepa.inference.features.knn import knn_evaluate
    from hjepa.train.knn_monitor import KnnMonitor

    monitor = KnnMonitor(cfg, torch.device("cpu"), train_samples, test_samples)

    def pixels(images: torch.Tensor) -> torch.Tensor:
        flat = monitor.transform(images).flatten(1)
        return flat - flat.mean(1, keepdim=True)

    (bank, bank_labels), (queries, query_labels) = monitor.train_split, monitor.test_split
    result = knn_evaluate(pixels(bank), bank_labels, pixels(queries), query_labels, ks=[20], temperature=0.07,
                          num_classes=monitor.num_classes)
    return result[20]["top1"]


def read_curve(run_dir: Path) -> list[dict]:
    """``[{step, minutes, knn_val_top1}]`` from a run's metrics: minutes of training, the monitor's time excluded."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    start = None
    curve, monitor_seconds, last_time = [], 0.0, None
    for record in records:
        if start is None:
            start = record["time"]
        if "knn_val_top1_k20" in record:
            # The monitor's record comes right after the step's log record: the gap is the monitor's time.
            if last_time is not None:
                monitor_seconds += record["time"] - last_time
            curve.append({"step": record["step"], "minutes": (record["time"] - start - monitor_seconds) / 60,
                          "knn_val_top1": record["knn_val_top1_k20"]})
        last_time = record["time"]
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", default=[], metavar="LABEL=PRESET[:KEY=VALUE,...]")
    parser.add_argument("--collect", action="append", default=[], metavar="LABEL=RUN_DIR")
    parser.add_argument("--knn-every", type=int, default=100)
    parser.add_argument("--bank", type=int, default=10000, help="bank images from the train part")
    parser.add_argument("--queries", type=int, default=2000, help="validation queries")
    parser.add_argument("--name", default="learning")
    parser.add_argument("--png", default=str(ROOT / "docs" / "learning_curve.png"))
    args = parser.parse_args()

    from hjepa.config import load_config
    from hjepa.train import train

    monitor_settings = ["train.knn_split=val", f"train.knn_train_samples={args.bank}",
                        f"train.knn_test_samples={args.queries}", "train.progress=false"]
    runs: dict[str, dict] = {}
    for spec in args.run:
        label, _, rest = spec.partition("=")
        preset, _, extra = rest.partition(":")
        overrides = [item for item in extra.split(",") if item] + monitor_settings + [
            f"train.knn_every={args.knn_every}", f"train.out_dir=runs/learning/{label}"]
        cfg = load_config(preset, overrides)
        started = time.perf_counter()
        train(cfg, overwrite=True)
        runs[label] = {"preset": preset, "overrides": overrides, "run_dir": cfg.train.out_dir,
                       "wall_minutes": (time.perf_counter() - started) / 60}
    for spec in args.collect:
        label, _, run_dir = spec.partition("=")
        runs[label] = {"run_dir": run_dir}
    if not runs:
        parser.error("give at least one --run or --collect")
    for run in runs.values():
        run_dir = Path(run["run_dir"])
        cfg = load_config(run_dir / "config.yaml")
        run["config"] = cfg.to_dict()
        run["curve"] = read_curve(run_dir)
    first_cfg = load_config(Path(next(iter(runs.values()))["run_dir"]) / "config.yaml", monitor_settings)
    pixels = pixel_knn(first_cfg, args.bank, args.queries)

    rows = [{"run": label, "steps": point["step"], "minutes": point["minutes"], "knn_val_top1": point["knn_val_top1"]}
            for label, run in runs.items() for point in run["curve"]]
    print_table(rows, ["run", "steps", "minutes", "knn_val_top1"])
    print(f"raw pixels (same bank and queries): {pixels:.2f}")
    path = write_json(args.name, {"bank": args.bank, "queries": args.queries, "pixels_knn_val_top1": pixels,
                                  "runs": runs})
    print(f"wrote {path}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for label, run in runs.items():
        curve = run["curve"]
        ax.plot([p["minutes"] for p in curve], [p["knn_val_top1"] for p in curve], marker="o", label=label)
    ax.axhline(pixels, color="gray", linestyle="--", label=f"raw pixels ({pixels:.1f} %)")
    ax.set_xlabel("training minutes (2 CPU cores)")
    ax.set_ylabel(f"k-NN top-1 (%), validation split, {args.bank // 1000}k bank")
    ax.set_title("Fashion-MNIST: level-0 pooled features vs training time")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    Path(args.png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.png)
    print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
