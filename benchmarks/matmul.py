"""What the machine's matmuls reach on the shapes of the I-JEPA comparison step: the ceiling for any train step.

The comparison step (vit_tiny 32 px / patch 4, batch 64, predictor 384 x 6) spends about 80 % of its time in
``aten::mm`` / ``aten::addmm``. This times each linear layer's three products on its own (forward ``x @ W^T + b``,
input gradient ``g @ W``, weight gradient ``g^T @ x``) for the predictor's 384-wide layers over the ~3,600 packed
rows of a batch and the encoder's 192-wide layers over its 4,096 target tokens, and reports GFLOP/s. A whole step
cannot run faster than its FLOPs at these rates; the I-JEPA figure in issue 5 (2.49 s for ~450 GFLOP) would need
about 180 GFLOP/s sustained.

    python benchmarks/matmul.py [--threads 2] [--repeats 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections.abc import Callable

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, os.path.dirname(__file__))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from common import median_time, print_table, write_json  # noqa: E402

# (rows, in, out): the predictor's qkv / proj / fc1 / fc2 over a packed batch, the encoder's over 64 x 64 tokens.
SHAPES = [
    (3584, 384, 1152), (3584, 384, 384), (3584, 384, 1536), (3584, 1536, 384),
    (4096, 192, 576), (4096, 192, 192), (4096, 192, 768), (4096, 768, 192),
]


def products(n: int, k: int, m: int) -> dict[str, Callable[[], torch.Tensor]]:
    """A linear layer ``k -> m`` over ``n`` rows: its forward and its two backward products."""
    x, w, b, g = torch.randn(n, k), torch.randn(m, k), torch.randn(m), torch.randn(n, m)
    return {"forward": lambda: F.linear(x, w, b), "grad_input": lambda: g @ w, "grad_weight": lambda: g.t() @ x}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for n, k, m in SHAPES:
        row = {"rows": n, "in": k, "out": m}
        for name, product in products(n, k, m).items():
            row[f"{name}_gflop_s"] = 2 * n * k * m / median_time(product, args.repeats) / 1e9
        rows.append(row)
    rates = [r[c] for r in rows for c in r if c.endswith("_gflop_s")]
    summary = {"min_gflop_s": min(rates), "median_gflop_s": statistics.median(rates), "max_gflop_s": max(rates)}
    print_table(rows, ["rows", "in", "out", "forward_gflop_s", "grad_input_gflop_s", "grad_weight_gflop_s"])
    print(f"min {summary['min_gflop_s']:.0f}, median {summary['median_gflop_s']:.0f}, "
          f"max {summary['max_gflop_s']:.0f} GFLOP/s ({args.threads} threads)")
    path = write_json("matmul", {"settings": {"threads": args.threads, "repeats": args.repeats, "dtype": "float32"},
                                 "rows": rows, "summary": summary})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
