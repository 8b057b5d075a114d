"""One run of the hierarchy screen (docs/learning.md): train a preset with overrides, then score it on the validation
split carved from train: the k-NN monitor (10,000-image bank, 2,000 queries, level 0 pooled) and ``hjepa-eval dense
--split val``. Appends the run to ``benchmarks/results/hierarchy_screen.json``; the test split is never read.

    python benchmarks/hierarchy_screen.py s01_scenes --what "scenes 0.5" --set data.scenes=0.5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
BIN = Path(sys.executable).parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name")
    p.add_argument("--config", default="fashion-mnist")
    p.add_argument("--what", default="")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--runs", default=str(ROOT / "runs" / "screen"))
    args = p.parse_args()
    out = Path(args.runs) / args.name
    steps = _steps(args)
    monitor = ["train.knn_split=val", "train.knn_train_samples=10000", "train.knn_test_samples=2000",
               f"train.knn_every={steps}", f"train.checkpoint_every={steps}"]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    start = time.time()
    train = [str(BIN / "hjepa-train"), "--config", args.config, "--out", str(out), "--overwrite"]
    subprocess.run(train + [f"--set={o}" for o in monitor + args.overrides], check=True, env=env)
    trained = time.time() - start
    dense_json = RESULTS / "hierarchy_screen" / f"{args.name}.dense.json"
    dense_json.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(BIN / "hjepa-eval"), "dense", str(out), "--split", "val", "--train-mosaics", "2000",
                    "--test-mosaics", "1000", "--out", str(dense_json)], check=True, env=env)
    (RESULTS / "hierarchy_screen" / f"{args.name}.config.yaml").write_text((out / "config.yaml").read_text())
    record(args, steps, out, dense_json, trained, time.time() - start)


def _steps(args: argparse.Namespace) -> int:
    for item in args.overrides:
        if item.startswith("train.steps="):
            return int(item.split("=", 1)[1])
    from hjepa.config import load_config
    return load_config(args.config).train.steps


def record(args: argparse.Namespace, steps: int, out: Path, dense_json: Path, trained: float, total: float) -> None:
    knn = None
    for line in (out / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        knn = next((v for k, v in row.items() if k.startswith(("knn_top1", "knn_val_top1"))), knn)
    dense = json.loads(dense_json.read_text())["levels"]
    path = RESULTS / "hierarchy_screen.json"
    table = json.loads(path.read_text())
    table["runs"][args.name] = {
        "config": args.config, "steps": steps, "what": args.what, "overrides": " ".join(args.overrides),
        "knn_val_top1": knn,
        "dense_val": {k: {m: v["dense"][m] for m in ("miou", "tile_top1")} for k, v in dense.items()},
        "train_s": round(trained, 1), "total_s": round(total, 1),
    }
    path.write_text(json.dumps(table, indent=2) + "\n")
    print(json.dumps(table["runs"][args.name], indent=2))


if __name__ == "__main__":
    main()
