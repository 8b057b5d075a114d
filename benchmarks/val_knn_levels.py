"""Pooled k-NN of every level of a run's last checkpoint on the validation split carved from train (the training
monitor's protocol: 10,000-image bank, 2,000 queries, k = 20, T = 0.07, fp32); the test split is never read.
With ``--record NAME`` the figures go into ``benchmarks/results/hierarchy_screen.json`` under that run's
``knn_val_per_level`` (docs/learning.md, eighth screen).

    python benchmarks/val_knn_levels.py runs/screen/c02_proj256_sceneneighbours_merge --record c02_...
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from hjepa.train.checkpoint import load_model  # noqa: E402
from hjepa.train.knn_monitor import KnnMonitor  # noqa: E402

SCREEN = Path(__file__).resolve().parent / "results" / "hierarchy_screen.json"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run")
    p.add_argument("--record", metavar="NAME")
    args = p.parse_args()
    model, cfg, _ = load_model(Path(args.run) / "checkpoints" / "last.pt")
    cfg.train.knn_split = "val"
    monitor = KnnMonitor(cfg, torch.device("cpu"), 10000, 2000)
    per_level = {}
    for level in range(cfg.model.num_levels):
        result = monitor(model, level)
        per_level[str(level)] = next(iter(result.values()))["top1"]  # k = 20, the only k
    print(json.dumps({"run": args.run, "knn_val_per_level": per_level}))
    if args.record:
        screen = json.loads(SCREEN.read_text())
        screen["runs"][args.record]["knn_val_per_level"] = per_level
        SCREEN.write_text(json.dumps(screen, indent=2) + "\n")


if __name__ == "__main__":
    main()
