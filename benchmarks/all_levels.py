"""One graph for every level (``--format levels``) against one file per level, on onnxruntime CPU.

A deployment that reads every level runs the per-level files one after another (the encoder once per level) or
``levels.onnx`` once. Quickstart architecture (fashion-mnist-masked), random weights: the architecture sets the
speed. Interleaved medians at batch 1 and 16; results in ``benchmarks/results/all_levels.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import RESULTS, machine  # noqa: E402
from hjepa.config import load_config  # noqa: E402
from hjepa.export import ExportOptions, export  # noqa: E402
from hjepa.export.verify import cpu_session, sample_inputs  # noqa: E402
from hjepa.inference.artifacts.artifact import LoadedModel, make_spec, write_artifact  # noqa: E402
from hjepa.models import build_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="fashion-mnist-masked")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", default=str(RESULTS / "all_levels.json"))
    args = parser.parse_args()
    cfg = load_config(args.preset)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        artifact = Path(tmp) / "artifact"
        artifact.mkdir()
        write_artifact(LoadedModel(model, cfg, make_spec(model, cfg, "random", "0" * 64), "0" * 64), artifact)
        manifest = export(artifact, "all", Path(tmp) / "exp", ExportOptions(formats=("levels",)))
        levels = manifest["all_levels"]["levels"]
        threads = torch.get_num_threads()
        together = cpu_session(Path(tmp) / "exp" / "levels.onnx", threads=threads)
        apart = [cpu_session(Path(tmp) / "exp" / f"level{k}.onnx", threads=threads) for k in levels]
        runs = {"levels.onnx once": lambda x: together.run(None, {"images": x}),
                "level{K}.onnx each": lambda x: [s.run(None, {"images": x}) for s in apart]}
        for batch in (1, 16):
            inputs = sample_inputs(batch, cfg.model.img_size, "float_nchw", (0.5,) * 3, (0.25,) * 3)
            times: dict[str, list[float]] = {name: [] for name in runs}
            for _ in range(3):
                for run in runs.values():
                    run(inputs)
            for _ in range(args.repeats):  # interleaved, so load on the shared machine hits both alike
                for name, run in runs.items():
                    start = time.perf_counter()
                    run(inputs)
                    times[name].append(time.perf_counter() - start)
            for name, values in times.items():
                median = float(np.median(values))
                rows.append({"batch": batch, "runs": name, "levels": levels, "latency_ms": median * 1000,
                             "images_per_s": batch / median})
    base = {r["batch"]: r["latency_ms"] for r in rows if r["runs"].startswith("level{K}")}
    print("| batch | files | all levels latency ms | img/s | speed-up |\n|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['batch']} | {row['runs']} | {row['latency_ms']:.2f} | {row['images_per_s']:.1f} | "
              f"{base[row['batch']] / row['latency_ms']:.2f}x |")
    Path(args.out).write_text(json.dumps({"machine": machine(), "preset": args.preset, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
