"""Benchmark of DINO-style k-NN evaluation on random features (CPU by default).

    python benchmarks/knn.py            # 50,000 train x 10,000 test, width 384, 100 classes, k=20, 2 threads
    python benchmarks/knn.py --quick    # 5,000 x 1,000: a smoke run

Prints a table (seconds, test rows per second, similarity GFLOP/s) for each chunk size and writes
``benchmarks/results/knn.json`` with the settings, the machine and the timings.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

from hjepa.evaluation.report import format_table, write_report
from hjepa.inference.features.knn import knn_evaluate, knn_neighbours

T = TypeVar("T")
RESULTS = Path(__file__).resolve().parent / "results" / "knn.json"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5,000 train x 1,000 test instead of 50,000 x 10,000")
    parser.add_argument("--num-train", type=int, default=None)
    parser.add_argument("--num-test", type=int, default=None)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--num-classes", type=int, default=100)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--chunk-sizes", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per setting; the fastest is reported")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser.parse_args()


def timed(fn: Callable[[], T], repeats: int, device: torch.device) -> tuple[float, T]:
    """Fastest wall time of ``repeats`` calls of ``fn`` (synchronising CUDA so the time is the work's), last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    args = parse_args()
    num_train = args.num_train or (5_000 if args.quick else 50_000)
    num_test = args.num_test or (1_000 if args.quick else 10_000)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(0)
    train = torch.randn(num_train, args.dim, generator=generator).to(device)
    test = torch.randn(num_test, args.dim, generator=generator).to(device)
    train_labels = torch.randint(0, args.num_classes, (num_train,), generator=generator).to(device)
    test_labels = torch.randint(0, args.num_classes, (num_test,), generator=generator).to(device)
    knn_neighbours(train[:256], test[:64], args.k)  # warm-up: first-call allocations and thread-pool start
    flops = 2.0 * num_train * num_test * args.dim  # the similarity matmul dominates

    rows = []
    for chunk_size in args.chunk_sizes:
        seconds, results = timed(
            lambda chunk=chunk_size: knn_evaluate(
                train, train_labels, test, test_labels, ks=[args.k], num_classes=args.num_classes, chunk_size=chunk
            ),
            args.repeats,
            device,
        )
        result = results[args.k]
        rows.append(
            {
                "chunk": chunk_size,
                "block MiB": round(chunk_size * num_train * 4 / 2**20, 1),
                "seconds": round(seconds, 3),
                "test rows/s": round(num_test / seconds),
                "GFLOP/s": round(flops / seconds / 1e9, 1),
                "top1 %": result["top1"],  # random labels: should sit near chance, 100 / num_classes
            }
        )
    print(
        f"k-NN: {num_train} train x {num_test} test, dim {args.dim}, {args.num_classes} classes, k={args.k}, "
        f"{args.threads} threads on {device}"
    )
    print(format_table(rows))
    report = {
        "benchmark": "knn_evaluate",
        "settings": {
            "num_train": num_train,
            "num_test": num_test,
            "dim": args.dim,
            "num_classes": args.num_classes,
            "k": args.k,
            "temperature": 0.07,
            "threads": args.threads,
            "device": str(device),
            "repeats": args.repeats,
            "quick": args.quick,
        },
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cuda_device": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        },
        "results": rows,
    }
    print(f"wrote {write_report(args.output, report)}")


if __name__ == "__main__":
    main()
