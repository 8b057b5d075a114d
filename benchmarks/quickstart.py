"""The quickstart end to end: ``python -m hjepa.demo`` (train the fashion-mnist preset, then k-NN of trained and
random-init level-0 features on the full test set), timed from outside, with the demo's own summary.

    python benchmarks/quickstart.py            # runs the demo (about 6 minutes on 2 cores)
    python benchmarks/quickstart.py --reuse    # report the last run's runs/fashion-mnist/demo.json instead
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from common import print_table, write_json  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reuse", action="store_true", help="report the existing demo.json without training")
    parser.add_argument("--run", default="runs/fashion-mnist", help="the preset's run directory")
    args = parser.parse_args()
    summary_path = ROOT / args.run / "demo.json"
    wall = None
    if not args.reuse:
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": str(ROOT)}
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "hjepa.demo"], cwd=ROOT, env=env, check=True)
        wall = time.perf_counter() - start
    if not summary_path.exists():
        sys.exit(f"{summary_path} does not exist: run without --reuse first")
    summary = json.loads(summary_path.read_text())
    row = {
        "wall_s": wall if wall is not None else summary["total_seconds"],
        "train_s": summary["train_seconds"],
        "steps": summary["steps"],
        "knn_trained": summary["knn_trained"]["top1"],
        "knn_random_init": summary["knn_random_init"]["top1"],
        "gain_points": summary["gain_points"],
    }
    print_table([row], list(row))
    print(f"wrote {write_json('quickstart', {'reused': args.reuse, 'summary': summary, 'row': row})}")


if __name__ == "__main__":
    main()
