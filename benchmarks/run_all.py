"""Run every CPU benchmark in turn (``make bench``), then print the summary table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
SCRIPTS = [
    ["masks.py"],
    ["matmul.py"],
    ["knn.py"],
    ["train_step.py", "--quick"],
    ["inference.py", "--quick"],
    ["quickstart.py"],
]

if __name__ == "__main__":
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": str(HERE.parent)}
    failed = []
    for script in SCRIPTS:
        print(f"== {' '.join(script)}", flush=True)
        if subprocess.call([sys.executable, str(HERE / script[0]), *script[1:]], env=env):
            failed.append(script[0])
    subprocess.call([sys.executable, str(HERE / "summary.py")], env=env)
    sys.exit(1 if failed else 0)
