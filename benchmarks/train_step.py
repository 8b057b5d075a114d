"""Median training-step time and images/s: the quickstart model, the I-JEPA comparison setting, and ViT-S/16 at 224.

The I-JEPA reference code takes 2.49 s per step on this 2-core machine for vit_tiny at 32 px / patch 4, batch 64,
with a 384-wide depth-6 predictor (the figure given in issue 5; the reference itself is not run here). The
``ijepa-tiny-*`` rows use those encoder and predictor sizes with one level and our multi-block masks, in the three
predictor layouts; ``ijepa-reference-layout`` runs I-JEPA's own layout on this code (its masks, with a context of
about 12 tokens, and one predictor sequence per block), so a same-run ratio to it needs no figure from elsewhere.
Settings are timed round-robin, one step each in turn, so machine noise hits them alike.

    python benchmarks/train_step.py [--quick] [--device auto|cpu|cuda] [--compile]
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
from common import print_table, sync, write_json  # noqa: E402
from masks import ReferenceMaskCollator  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from hjepa.config import load_config  # noqa: E402
from hjepa.data import batch_generator  # noqa: E402
from hjepa.masks import MaskBatch, build_mask_generator  # noqa: E402
from hjepa.train.loop import compile_runner, masks_to  # noqa: E402
from hjepa.train.model import build_training_model  # noqa: E402
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
    "vit-s16-224": ("imagenet100-vit-base", [  # batch 256 per GPU: what fills an H100 / H200, as the preset
        "model.encoder=vit_small", "model.predictor_embed_dim=384", "model.predictor_depth=6",
        "model.predictor_num_heads=6", "data.batch_size=256",
    ]),
}
SETTINGS["cifar100-vit-tiny"] = ("cifar100-vit-tiny", [])
SETTINGS["cifar100-vit-small"] = ("cifar100-vit-small", [])
_IJEPA_PRESET, _IJEPA_SETS = SETTINGS["ijepa-tiny-per_block"]
for _layout in ("joint", "packed"):
    SETTINGS[f"ijepa-tiny-{_layout}"] = (_IJEPA_PRESET, [*_IJEPA_SETS[:-1], f"model.predictor_batching={_layout}"])
SETTINGS["ijepa-tiny-cross"] = (_IJEPA_PRESET, [*_IJEPA_SETS[:-1], "model.predictor=cross"])
# I-JEPA's layout exactly: its masks (about 12 context tokens) and one predictor sequence per block.
SETTINGS["ijepa-reference-layout"] = SETTINGS["ijepa-tiny-per_block"]


def reference_masks(batch_size: int, step: int, grid: tuple[int, int]) -> MaskBatch:
    """I-JEPA's own masks (``benchmarks/masks.py``'s port of its collator: a context of about 12 tokens on the 8x8
    grid, truncated to the batch minimum), as a MaskBatch, so ``per_block`` runs I-JEPA's layout token for token."""
    collator = ReferenceMaskCollator(grid=grid, min_keep=4)
    collator.step = step - 1
    with torch.random.fork_rng(devices=[]):  # the collator draws block positions from the global RNG:
        torch.manual_seed(step)  # seed it per step so every run times the same batches
        contexts, targets = collator(batch_size)
    context_idx = contexts[0]
    target_idx = torch.stack(targets, dim=1)  # [B, 4, h * w], raster order inside each block
    rows, cols = target_idx[0, 0] // grid[1], target_idx[0, 0] % grid[1]
    shape = (int(rows.max() - rows.min()) + 1, int(cols.max() - cols.min()) + 1)
    n = grid[0] * grid[1]
    context = torch.zeros(batch_size, n, dtype=torch.bool).scatter_(1, context_idx, True)
    target_masks = torch.zeros(batch_size, target_idx.shape[1], n, dtype=torch.bool).scatter_(2, target_idx, True)
    return MaskBatch(context, context_idx, [target_masks], [target_idx], [shape], grid)


class Setting:
    """One model, optimizer and mask source, ready to run training steps."""

    def __init__(self, name: str, device: torch.device, compile_model: bool, batch: int | None) -> None:
        preset, sets = SETTINGS[name]
        if batch:
            sets = [*sets, f"data.batch_size={batch}"]
        cfg = load_config(preset, [*sets, "train.steps=1000"])
        torch.manual_seed(0)
        self.name, self.device, self.compile, self.cfg = name, device, compile_model, cfg
        self.model = build_training_model(cfg).to(device)
        self.schedules = build_schedules(cfg)
        self.model.set_momentum_schedule(self.schedules.momentum)
        self.optimizer = build_optimizer(self.model, cfg.optim, device)
        self.runner = compile_runner(self.model) if compile_model else self.model  # shapes vary per batch
        generator = build_mask_generator(cfg.masks, self.model.grid, self.model.num_levels)
        if name.startswith("ijepa-reference"):
            self.masks = lambda b, step: reference_masks(b, step, self.model.grid)
        else:
            self.masks = lambda b, step: generator(b, batch_generator(0, step))
        self.batch_size = cfg.data.batch_size
        size = cfg.model.img_size
        self.images = torch.randn(self.batch_size, 3, size, size, device=device)
        self.step = 0

    def run(self, model: torch.nn.Module | None = None) -> None:
        """One step; every setting sees the same sequence of mask seeds."""
        masks = self.masks(self.batch_size, self.step)
        if self.model.packs_queries:  # as the training loop
            masks = masks.with_queries()
        masks = masks_to(masks, self.device)  # pinned + non_blocking on CUDA, as the loop
        train_step(model or self.runner, self.model, self.images, masks, self.optimizer, self.schedules, self.step,
                   self.cfg.optim.clip_grad, amp=True)
        self.step += 1

    def flops(self) -> float:
        """Forward + backward FLOPs of one eager step, averaged over the first five mask batches."""
        total = 0
        for step in range(5):
            self.step = step
            with FlopCounterMode(display=False) as counter:
                self.run(self.model)
            total += counter.get_total_flops()
        return total / 5


def bench_interleaved(settings: list[Setting], repeats: int, warmup: int) -> list[dict]:
    """Median step time of every setting, timed round-robin (one step each in turn) so that a busy machine slows
    them all alike and their ratios stay meaningful."""
    for setting in settings:
        for _ in range(warmup):
            setting.run()
        setting.step = 0
    times: dict[str, list[float]] = {id(s): [] for s in settings}
    for _ in range(repeats):
        for setting in settings:
            sync(setting.device)
            start = time.perf_counter()
            setting.run()
            sync(setting.device)
            times[id(setting)].append(time.perf_counter() - start)
    rows = []
    for setting in settings:
        seconds = statistics.median(times[id(setting)])
        flops = setting.flops()
        row = {
            "setting": setting.name, "device": setting.device.type, "compile": setting.compile,
            "batch": setting.batch_size, "step_s": seconds, "images_per_s": setting.batch_size / seconds,
            "gflop_per_step": flops / 1e9, "tflop_s": flops / seconds / 1e12,
        }
        if setting.device.type == "cuda" and any(g in torch.cuda.get_device_name() for g in ("H100", "H200")):
            row["mfu_bf16"] = row["tflop_s"] / 989.0  # dense bf16 peak of an H100 / H200 SXM
        if setting.name.startswith("ijepa") and setting.device.type == "cpu":
            row["speedup_vs_ijepa_figure"] = IJEPA_REFERENCE_SECONDS / seconds
        rows.append(row)
    reference = next((r for r in rows if r["setting"] == "ijepa-reference-layout"), None)
    if reference:
        for row in rows:
            if row["setting"].startswith("ijepa"):
                row["speedup_vs_reference_layout"] = reference["step_s"] / row["step_s"]
    return rows


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
    repeats = 3 if args.quick else (7 if device.type == "cpu" else 20)
    settings, rows = [], []
    for name in names:
        for compiled in ([False, True] if args.compile else [False]):
            try:
                settings.append(Setting(name, device, compiled, None))
                settings[-1].run()  # compile errors (e.g. no C++ toolchain) surface here: record, keep going
            except Exception as exc:
                settings = settings[:-1] if settings and settings[-1].name == name else settings
                rows.append({"setting": name, "compile": compiled, "error": f"{type(exc).__name__}: {exc}"[:200]})
    rows = bench_interleaved(settings, repeats, warmup=3 if args.compile else 1) + rows
    columns = ["setting", "device", "compile", "batch", "step_s", "images_per_s", "gflop_per_step", "tflop_s",
               "mfu_bf16", "speedup_vs_ijepa_figure", "speedup_vs_reference_layout", "error"]
    print_table(rows, columns)
    path = write_json(args.name, {"settings": {n: SETTINGS[n] for n in names}, "repeats": repeats, "rows": rows,
                                     "ijepa_reference_step_s": IJEPA_REFERENCE_SECONDS})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
