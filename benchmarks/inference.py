"""Inference speed of one exported level: torch eager, torch.compile, onnxruntime fp32 / int8, TensorRT (GPU).

Median latency at batch 1 (ms) and throughput at batch 64 (images/s) for the quickstart architecture (the
fashion-mnist preset: ViT-tiny width, depth 4, 32 px, patch 4) and ViT-S/16 at 224 px, both at random init (the
architecture sets the speed; pass --checkpoint to time trained quickstart weights instead). Torch and onnxruntime
get the same number of intra-op threads. The onnxruntime rows run the graph ``hjepa-export`` writes (attention
blocks fused into ``com.microsoft.Attention``, ``hjepa/export/fuse.py``); the "unfused" rows the traced graph, for
comparison. Each row also gives the error against eager on the same batch, and the quickstart int8 rows the k-NN
top-1 of int8 vs fp32 features on Fashion-MNIST. The two "floor" rows time the level's weight products alone in fp32
and int8 on onnxruntime (``gemm_floor.py``), in the same rounds: their "vs eager" column is the largest speed-up
onnxruntime's kernels allow on this machine, whatever the rest of the graph does.

    python benchmarks/inference.py            # 2 threads, CPU; ~5 minutes on 2 cores
    python benchmarks/inference.py --quick    # fewer repeats, smaller k-NN subsets
    python benchmarks/inference.py --device cuda   # eager / compile on the GPU, plus TensorRT fp32 + fp16 engines
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, os.path.dirname(__file__))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import print_table, write_json  # noqa: E402
from gemm_floor import floor_runner, save_floor_models  # noqa: E402

from hjepa.config import load_config  # noqa: E402
from hjepa.data import dataset_stats  # noqa: E402
from hjepa.export import checked_level_encoder  # noqa: E402
from hjepa.export import tensorrt_build as trt_build  # noqa: E402
from hjepa.export.fuse import fuse_for_cpu, op_counts  # noqa: E402
from hjepa.export.onnx_export import save_onnx, set_metadata, trace_onnx  # noqa: E402
from hjepa.export.quantize import int8_knn, quantize_int8  # noqa: E402
from hjepa.export.verify import compare, cpu_session, sample_inputs  # noqa: E402
from hjepa.train.model import build_training_model  # noqa: E402

SETTINGS = {
    "quickstart": ("fashion-mnist-masked", []),  # the 8x8-grid encoder the recorded figures were measured on
    "vit-s16-224": (None, ["model.encoder=vit_small", "model.img_size=224", "model.patch_size=16",
                           "model.num_levels=1", "model.predictor_depth=1"]),
}
Run = Callable[[np.ndarray], object]
FLOOR = "floor: weight GEMMs only"  # rows that time gemm_floor.py's graph: the bound, not a backend


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats and smaller k-NN subsets")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=2, help="torch and onnxruntime intra-op threads")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--batch", type=int, default=64, help="throughput batch")
    parser.add_argument("--checkpoint", type=Path, default=None, help="trained weights for the quickstart setting")
    return parser.parse_args()


def backends(
    model: torch.nn.Module, module: torch.nn.Module, folder: Path, args: argparse.Namespace, notes: list[str]
) -> dict[str, Run]:
    """name -> run(inputs numpy) for every backend that works here (``module``: the fp32 LevelEncoder)."""
    size = module.grid[0] * module.encoder.vit.patch_embed.patch_size[0]
    example = torch.from_numpy(sample_inputs(2, size, "float_nchw", (0.5,) * 3, (0.5,) * 3))
    # Step 1. ONNX files, traced on the CPU before the module moves anywhere: the traced graph ("unfused") and the
    # graph hjepa-export writes for onnxruntime (attention blocks fused), each in fp32 and int8.
    onnx_model, _ = trace_onnx(module, example, 20)
    set_metadata(onnx_model, {})
    traced = save_onnx(onnx_model, folder / "traced_fp32.onnx")
    quantize_int8(traced, folder / "traced_int8.onnx")
    fused_model, fused = fuse_for_cpu(onnx_model, example.numpy())
    notes.append(f"{module.grid[0] * module.grid[1]}-token setting: {fused} attention blocks fused; ops "
                 f"{dict(sorted(op_counts(fused_model).items()))}")
    fp32 = save_onnx(fused_model, folder / "fp32.onnx")
    quantize_int8(fp32, folder / "int8.onnx")
    # Step 2. PyTorch eager and compiled on the benchmark device.
    device = torch.device(args.device)
    eager = module.to(device)
    runs: dict[str, Run] = {"torch eager": torch.inference_mode()(lambda x: eager(torch.from_numpy(x).to(device)))}
    try:
        compiled = torch.compile(eager)
        with torch.inference_mode():
            compiled(example.to(device))
        runs["torch.compile"] = torch.inference_mode()(lambda x: compiled(torch.from_numpy(x).to(device)))
    except Exception as exc:  # inductor needs a C++ compiler on the CPU; report instead of failing the benchmark
        notes.append(f"torch.compile skipped: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
    # Step 3. onnxruntime on the CPU, TensorRT on the GPU.
    if args.device == "cpu":
        files = (("onnxruntime fp32", fp32), ("onnxruntime int8", folder / "int8.onnx"),
                 ("onnxruntime fp32 unfused", traced), ("onnxruntime int8 unfused", folder / "traced_int8.onnx"))
        for name, path in files:
            session = cpu_session(path, args.threads, spinning=False)  # idle threads sleep, as torch's
            runs[name] = lambda x, s=session: s.run(None, {"images": x})
        floor_fp32, floor_int8, floor = save_floor_models(module, example, folder)
        notes.append(f"{module.grid[0] * module.grid[1]}-token setting: GEMM floor of {floor['products']} weight "
                     f"products, {floor['gmacs_per_image']:.3f} GMAC per image")
        for name, path in ((FLOOR + " fp32", floor_fp32), (FLOOR + " int8", floor_int8)):
            runs[name] = floor_runner(cpu_session(path, args.threads, spinning=False))
        return runs
    try:
        trt = trt_build.require_tensorrt()
    except Exception as exc:
        notes.append(f"TensorRT skipped: {exc}")
        return runs
    for precision in ("fp32", "fp16"):
        source = traced  # TensorRT cannot parse the contrib Attention nodes of the fused graph
        if precision == "fp16" and trt_build.api_major(trt) >= 11:  # strongly typed: fp16 must be in the graph
            half = checked_level_encoder(model, 0, module.mean.flatten().tolist(), module.std.flatten().tolist(),
                                       half=True)
            source = save_onnx(trace_onnx(half, example, 20)[0], folder / "fp16.onnx")
        engine = folder / f"{precision}.engine"
        trt_build.build_engine(trt, source, engine, [3, size, size], (1, 8, args.batch), precision == "fp16",
                               folder / "timing.cache")
        runs[f"tensorrt {precision}"] = trt_build.EngineRunner(trt, engine)
    return runs


def interleaved_medians(runs: dict[str, Run], inputs: np.ndarray, repeats: int, device: torch.device) -> dict:
    """Median seconds per backend, timing the backends in turn on every round so load from other processes
    falls on all of them alike (the shared CI machine is rarely idle)."""
    def once(run: Run) -> float:
        start = time.perf_counter()
        run(inputs)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    for run in runs.values():
        once(run)  # warm-up: first-call allocations, thread pools, lazy initialisation
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            times[name].append(once(run))
    return {name: statistics.median(values) for name, values in times.items()}


def outputs(result: object) -> list[np.ndarray]:
    return [t.float().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t) for t in result]


def bench_setting(name: str, args: argparse.Namespace, notes: list[str]) -> tuple[list[dict], dict | None]:
    preset, overrides = SETTINGS[name]
    cfg = load_config(preset, overrides)
    torch.manual_seed(0)
    model = build_training_model(cfg).eval()
    if name == "quickstart" and args.checkpoint:
        from hjepa.train.checkpoint import load_model

        model, cfg, _ = load_model(args.checkpoint)
    mean, std = dataset_stats(cfg.data.dataset)
    module = checked_level_encoder(model, 0, mean, std)
    size = cfg.model.img_size
    repeats = (10, 3) if args.quick else (40, 8)
    rows, knn = [], None
    with tempfile.TemporaryDirectory() as tmp:
        runs = backends(model, module, Path(tmp), args, notes)
        probe = sample_inputs(8, size, "float_nchw", mean, std)
        reference = outputs(runs["torch eager"](probe))
        one = sample_inputs(1, size, "float_nchw", mean, std)
        many = sample_inputs(args.batch, size, "float_nchw", mean, std)
        device = torch.device(args.device)
        latency = interleaved_medians(runs, one, repeats[0], device)
        batch_time = interleaved_medians(runs, many, repeats[1], device)
        for backend, run in runs.items():
            row = {"setting": name, "backend": backend, "latency_ms": latency[backend] * 1000,
                   "images_per_s": args.batch / batch_time[backend]}
            if not backend.startswith(FLOOR):
                figures = compare(reference, outputs(run(probe)))
                row |= {"max_abs_err": figures["tokens"]["max_abs_err"], "min_cosine": figures["tokens"]["min_cosine"]}
            rows.append(row)
            print(f"  {name:<12} {backend:<28} {row['latency_ms']:8.2f}ms {row['images_per_s']:9.1f} img/s", flush=True)
        if name == "quickstart" and args.device == "cpu":
            counts = (1000, 500) if args.quick else (5000, 2000)
            knn = int8_knn(cpu_session(Path(tmp) / "fp32.onnx", args.threads),
                           cpu_session(Path(tmp) / "int8.onnx", args.threads), cfg,
                           {"img_size": size, "input_format": "float_nchw", "mean": mean, "std": std}, *counts)
    eager = rows[0]
    for row in rows:
        row["latency_speedup"] = eager["latency_ms"] / row["latency_ms"]
        row["throughput_speedup"] = row["images_per_s"] / eager["images_per_s"]
    return rows, knn


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    notes: list[str] = []
    rows, knn = [], {}
    for name in args.settings:
        print(f"== {name}", flush=True)
        setting_rows, setting_knn = bench_setting(name, args, notes)
        rows += setting_rows
        if setting_knn:
            knn[name] = setting_knn
    print_table(rows, ["setting", "backend", "latency_ms", "images_per_s", "latency_speedup", "throughput_speedup",
                       "max_abs_err", "min_cosine"])
    for name, result in knn.items():
        print(f"k-NN {name}: {result}")
    for note in notes:
        print(f"note: {note}")
    import onnx
    import onnxruntime
    import timm

    path = write_json("inference", {
        "benchmark": "inference",
        "settings": {"device": args.device, "threads": args.threads, "throughput_batch": args.batch, "latency_batch": 1,
                     "quick": args.quick, "level": 0, "load_average_at_end": os.getloadavg(), "opset": 20,
                     "weights": str(args.checkpoint or "random init"),
                     "int8": "onnxruntime quantize_dynamic, per-channel, 7-bit weights, weight MatMuls and the fused "
                             "Attention qkv projection (QAttention)",
                     "onnxruntime": "CPU EP, ORT_ENABLE_ALL, intra-op threads = --threads, inter-op 1, no spinning; "
                                    "'unfused' rows: the traced graph without fuse.py's Attention nodes",
                     "torch": "eager under torch.inference_mode(), torch.set_num_threads(--threads), "
                              "OMP_WAIT_POLICY=PASSIVE",
                     "floor": "benchmarks/gemm_floor.py: the level's weight MatMuls alone (patch embedding, qkv, "
                              "projection, MLP, head) on onnxruntime, fp32 and quantize_int8, IO-bound buffers; "
                              "eager / floor = the largest speed-up those kernels allow"},
        "versions": {"onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__, "timm": timm.__version__},
        "rows": rows, "int8_knn": knn, "notes": notes,
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
