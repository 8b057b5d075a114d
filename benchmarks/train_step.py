"""Median training-step time and images/s: the quickstart model, the I-JEPA comparison setting, and ViT-S/16 at 224.

The I-JEPA reference code takes 2.49 s per step on this 2-core machine for vit_tiny at 32 px / patch 4, batch 64,
with a 384-wide depth-6 predictor (the figure given in issue 5; the reference itself is not run here). The
``ijepa-tiny`` rows use those encoder and predictor sizes with one level and I-JEPA's multi-block masks.

    python benchmarks/train_step.py [--quick] [--device auto|cpu|cuda] [--compile]
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, os.path.dirname(__file__))

import torch  # noqa: E402
from common import median_time, print_table, write_json  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from hjepa.config import load_config  # noqa: E402
from hjepa.data import batch_generator  # noqa: E402
from hjepa.masks import build_mask_generator  # noqa: E402
from hjepa.models import build_model  # noqa: E402
from hjepa.train.optim import build_optimizer  # noqa: E402
from hjepa.train.schedules import build_schedules  # noqa: E402
from hjepa.train.step import train_step  # noqa: E402

IJEPA_REFERENCE_SECONDS = 2.49

SETTINGS = {
    "quickstart": ("fashion-mnist", []),
    "ijepa-tiny-per_block": ("fashion-mnist", [
        "model.depth=12", "model.num_levels=1", "model.predictor_embed_dim=384", "model.predictor_depth=6",
        "model.predictor_num_heads=6", "masks.generator=multiblock", "masks.num_targets=[4]",
        "masks.target_scale=[0.15, 0.2]", "masks.min_keep=4", "data.batch_size=64",
        "model.predictor_batching=per_block",
    ]),
    "vit-s16-224": ("imagenet100-vit-base", [
        "model.encoder=vit_small", "model.predictor_embed_dim=384", "model.predictor_depth=6",
        "model.predictor_num_heads=6", "data.batch_size=64",
    ]),
}
SETTINGS["cifar100-vit-tiny"] = ("cifar100-vit-tiny", [])
SETTINGS["cifar100-vit-small"] = ("cifar100-vit-small", [])
SETTINGS["ijepa-tiny-joint"] = (SETTINGS["ijepa-tiny-per_block"][0],
                                [*SETTINGS["ijepa-tiny-per_block"][1][:-1], "model.predictor_batching=joint"])


def bench(name: str, device: torch.device, compile_model: bool, repeats: int, batch: int | None) -> dict:
    preset, sets = SETTINGS[name]
    if batch:
        sets = [*sets, f"data.batch_size={batch}"]
    cfg = load_config(preset, [*sets, "train.steps=1000"])
    torch.manual_seed(0)
    model = build_model(cfg).to(device)
    schedules = build_schedules(cfg)
    model.set_momentum_schedule(schedules.momentum)
    optimizer = build_optimizer(model, cfg.optim, device)
    runner = torch.compile(model, dynamic=True) if compile_model else model  # K varies per batch
    masks_gen = build_mask_generator(cfg.masks, model.grid, model.num_levels)
    batch_size, size = cfg.data.batch_size, cfg.model.img_size
    images = torch.randn(batch_size, 3, size, size, device=device)
    step = [0]

    def one_step() -> None:
        masks = masks_gen(batch_size, batch_generator(0, step[0])).to(device)
        train_step(runner, model, images, masks, optimizer, schedules, step[0], cfg.optim.clip_grad, amp=True)
        step[0] += 1

    seconds = median_time(one_step, repeats, warmup=3 if compile_model else 1, device=device)
    with FlopCounterMode(display=False) as counter:  # forward + backward FLOPs of one (eager) step
        masks = masks_gen(batch_size, batch_generator(0, 0)).to(device)
        train_step(model, model, images, masks, optimizer, schedules, 0, cfg.optim.clip_grad, amp=True)
    row = {
        "setting": name, "device": device.type, "compile": compile_model, "batch": batch_size,
        "step_s": seconds, "images_per_s": batch_size / seconds,
        "gflop_per_step": counter.get_total_flops() / 1e9, "tflop_s": counter.get_total_flops() / seconds / 1e12,
    }
    if device.type == "cuda" and "H100" in torch.cuda.get_device_name():
        row["mfu_bf16"] = row["tflop_s"] / 989.0  # dense bf16 peak of an H100 SXM
    elif device.type == "cuda" and "H200" in torch.cuda.get_device_name():
        row["mfu_bf16"] = row["tflop_s"] / 989.0
    if name.startswith("ijepa-tiny") and device.type == "cpu":
        row["speedup_vs_ijepa"] = IJEPA_REFERENCE_SECONDS / seconds
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="fewer repeats; skip ViT-S/16 on the CPU")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--settings", nargs="*", default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", default="train_step", help="results/NAME.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    names = args.settings or list(SETTINGS)
    if device.type == "cpu" and not args.settings:  # the GPU-sized settings take minutes per step on a CPU
        names = [n for n in names if n not in ("vit-s16-224", "cifar100-vit-tiny", "cifar100-vit-small")]
    repeats = 3 if args.quick else (5 if device.type == "cpu" else 20)
    rows = []
    for name in names:
        for compiled in ([False, True] if args.compile else [False]):
            try:
                rows.append(bench(name, device, compiled, repeats, None))
            except Exception as exc:  # e.g. compile without a C++ toolchain: record, keep going
                rows.append({"setting": name, "compile": compiled, "error": f"{type(exc).__name__}: {exc}"[:200]})
            print(rows[-1], flush=True)
    columns = ["setting", "device", "compile", "batch", "step_s", "images_per_s", "tflop_s", "mfu_bf16",
               "speedup_vs_ijepa", "error"]
    print_table(rows, columns)
    path = write_json(args.name, {"settings": {n: SETTINGS[n] for n in names}, "repeats": repeats, "rows": rows,
                                     "ijepa_reference_step_s": IJEPA_REFERENCE_SECONDS})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
