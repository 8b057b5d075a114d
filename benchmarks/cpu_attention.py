"""The encoder's attention kernel on a CPU: PyTorch's fused scaled-dot-product attention against timm's explicit
``q @ k^T``, softmax, ``@ v``, at the quickstart's shapes (32 px, 4 px patches: 64 tokens; batch 128 x 2 views).

``ViTEncoder.select_attention`` picks the explicit kernel for bf16 training on a CPU. This times both kernels in
alternating rounds (so load on a shared machine hits both alike) for bf16 forward + backward, fp32 forward +
backward and bf16 inference, at each encoder width screened for the quickstart, and reports the ratio.

    python benchmarks/cpu_attention.py [--threads 2] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, os.path.dirname(__file__))

import torch  # noqa: E402
from common import print_table, write_json  # noqa: E402

from hjepa.config import load_config  # noqa: E402
from hjepa.models.vit import ViTEncoder  # noqa: E402

WIDTHS = [(192, 3), (128, 4), (96, 3)]  # (embed_dim, heads); depth 4 as in the quickstart
MODES = ["train_bf16", "train_fp32", "infer_bf16"]


def run_once(encoder: ViTEncoder, images: torch.Tensor, mode: str, fused: bool) -> float:
    """Seconds for one pass of ``mode`` with the kernel forced to ``fused``."""
    for module in encoder._attention:
        module.fused_attn = fused
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode.endswith("bf16")):
        if mode.startswith("infer"):
            with torch.no_grad():
                encoder.vit.norm(encoder.vit.blocks(encoder.vit.patch_embed(images) + encoder.pos_embed))
        else:
            out = encoder.vit.norm(encoder.vit.blocks(encoder.vit.patch_embed(images) + encoder.pos_embed))
            out.float().square().mean().backward()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=256, help="sequences per pass (the quickstart: 128 x 2 views)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    for dim, heads in WIDTHS:
        cfg = load_config("fashion-mnist").model
        cfg.embed_dim, cfg.num_heads = dim, heads
        encoder = ViTEncoder(cfg)
        images = torch.randn(args.batch, cfg.in_chans, cfg.img_size, cfg.img_size)
        for mode in MODES:
            times: dict[bool, list[float]] = {True: [], False: []}
            for fused in (True, False):  # warm-up
                run_once(encoder, images, mode, fused)
            for _ in range(args.rounds):
                for fused in (True, False):
                    times[fused].append(run_once(encoder, images, mode, fused))
            fused_s, explicit_s = statistics.median(times[True]), statistics.median(times[False])
            rows.append({"width": dim, "heads": heads, "mode": mode, "fused_s": fused_s, "explicit_s": explicit_s,
                         "explicit_speedup": fused_s / explicit_s})
    print_table(rows, ["width", "heads", "mode", "fused_s", "explicit_s", "explicit_speedup"])
    path = write_json("cpu_attention", {"settings": {"threads": args.threads, "rounds": args.rounds,
                                                     "batch": args.batch, "tokens": 64, "depth": 4},
                                        "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
