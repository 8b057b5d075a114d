"""Mask generation speed: the batched generators against the I-JEPA reference collator's per-sample loop.

    python benchmarks/masks.py [--runs 50] [--batch-size 256]

Times one batch of masks at 224 px / patch 16 (a 14x14 grid) with I-JEPA's settings (1 context block at scale
0.85-1.0, 4 targets at 0.15-0.2, aspect 0.75-1.5, min_keep 10), median over ``--runs``, for ``MultiBlockMaskGenerator``
and for a re-implementation of the reference algorithm below, interleaved in the same run so both see the same machine
load; then the hierarchical generator. A 14x14 grid allows at most 2 levels (cells of 2^k must divide it), so 3
levels are timed at 256 px / patch 16 (16x16). One CPU thread. Prints a table and writes benchmarks/results/masks.json.

The reference (facebookresearch/ijepa ``src/masks/multiblock.py``, ``MaskCollator``), re-implemented from its
algorithm: per batch, one target size and one context size from a seeded generator (one uniform draw shared by scale
and aspect); then a Python loop over samples and blocks, each block placed by ``torch.randint(0, H - h)`` (never
reaching the last row or column) in a loop that retries until more than ``min_keep`` tokens survive, relaxing the
constraints every 20 failures; the context block is restricted to the complement of the targets; finally every index
list is truncated to the batch minimum and collated. Image collation is left out of both timings.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import default_collate

from hjepa.masks import HierarchicalMaskGenerator, MultiBlockMaskGenerator, mask_statistics


class ReferenceMaskCollator:
    """The reference algorithm for ``grid`` patches; ``collator(batch_size) -> (context_masks, target_masks)``,
    lists of long ``[B, K]`` index tensors (``num_context`` and ``num_targets`` of them)."""

    def __init__(
        self,
        grid: tuple[int, int] = (14, 14),
        context_scale: tuple[float, float] = (0.85, 1.0),
        target_scale: tuple[float, float] = (0.15, 0.2),
        aspect_ratio: tuple[float, float] = (0.75, 1.5),
        num_context: int = 1,
        num_targets: int = 4,
        min_keep: int = 10,
    ) -> None:
        self.height, self.width = grid
        self.context_scale = context_scale
        self.target_scale = target_scale
        self.aspect_ratio = aspect_ratio
        self.num_context = num_context
        self.num_targets = num_targets
        self.min_keep = min_keep
        self.step = -1  # the reference keeps this counter in shared memory across workers

    def _block_size(self, generator: torch.Generator, scale: tuple[float, float], aspect: tuple[float, float]):
        draw = torch.rand(1, generator=generator).item()  # one draw for both scale and aspect, as the reference
        keep = int(self.height * self.width * (scale[0] + draw * (scale[1] - scale[0])))
        ratio = aspect[0] + draw * (aspect[1] - aspect[0])
        h = int(round(math.sqrt(keep * ratio)))
        w = int(round(math.sqrt(keep / ratio)))
        while h >= self.height:
            h -= 1
        while w >= self.width:
            w -= 1
        return h, w

    def _block_mask(self, size: tuple[int, int], acceptable: list[torch.Tensor] | None = None):
        h, w = size
        tries, timeout = 0, 20
        while True:
            top = torch.randint(0, self.height - h, (1,))
            left = torch.randint(0, self.width - w, (1,))
            mask = torch.zeros((self.height, self.width), dtype=torch.int32)
            mask[top : top + h, left : left + w] = 1
            if acceptable is not None:
                for region in acceptable[: max(len(acceptable) - tries, 0)]:
                    mask *= region
            indices = torch.nonzero(mask.flatten())
            if len(indices) > self.min_keep:
                break
            timeout -= 1
            if timeout == 0:
                tries, timeout = tries + 1, 20
        complement = torch.ones((self.height, self.width), dtype=torch.int32)
        complement[top : top + h, left : left + w] = 0
        return indices.squeeze(), complement

    def __call__(self, batch_size: int):
        self.step += 1
        generator = torch.Generator()
        generator.manual_seed(self.step)
        target_size = self._block_size(generator, self.target_scale, self.aspect_ratio)
        context_size = self._block_size(generator, self.context_scale, (1.0, 1.0))
        all_targets, all_contexts = [], []
        min_target = min_context = self.height * self.width
        for _ in range(batch_size):
            targets, complements = [], []
            for _ in range(self.num_targets):
                mask, complement = self._block_mask(target_size)
                targets.append(mask)
                complements.append(complement)
                min_target = min(min_target, len(mask))
            all_targets.append(targets)
            contexts = []
            for _ in range(self.num_context):
                mask, _ = self._block_mask(context_size, acceptable=complements)
                contexts.append(mask)
                min_context = min(min_context, len(mask))
            all_contexts.append(contexts)
        all_targets = default_collate([[m[:min_target] for m in sample] for sample in all_targets])
        all_contexts = default_collate([[m[:min_context] for m in sample] for sample in all_contexts])
        return all_contexts, all_targets


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def summarize(times: list[float]) -> dict[str, float]:
    """Seconds -> milliseconds: median, 10th / 90th percentiles and minimum."""
    ordered = sorted(times)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3  # noqa: E731
    return {
        "median_ms": statistics.median(ordered) * 1e3,
        "p10_ms": pick(0.1),
        "p90_ms": pick(0.9),
        "min_ms": ordered[0] * 1e3,
        "runs": len(ordered),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "masks.json")
    args = parser.parse_args()
    torch.set_num_threads(1)  # masks are made in data-loader workers, one thread each
    batch = args.batch_size

    ours = MultiBlockMaskGenerator(14)
    reference = ReferenceMaskCollator(grid=(14, 14))
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):  # warm-up: placement tables, allocator
        ours(batch, generator)
        reference(batch)
    ours_times, reference_times, ours_context, reference_context = [], [], [], []
    for _ in range(args.runs):  # interleaved, so both see the same machine load
        start = time.perf_counter()
        ours_context.append(ours(batch, generator).num_context)
        ours_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        reference_context.append(reference(batch)[0][0].shape[1])
        reference_times.append(time.perf_counter() - start)

    hierarchical = {}
    for name, grid, levels in [("hierarchical_224_p16_2_levels", 14, 2), ("hierarchical_256_p16_3_levels", 16, 3)]:
        masks = HierarchicalMaskGenerator(grid, levels, num_targets=4, min_keep=10)
        for _ in range(3):
            masks(batch, generator)
        times, fractions = [], []
        for _ in range(args.runs):
            start = time.perf_counter()
            sampled = masks(batch, generator)
            times.append(time.perf_counter() - start)
            fractions.append(mask_statistics(sampled)["context_fraction"])  # outside the timed region
        hierarchical[name] = {
            "grid": [grid, grid],
            "num_levels": levels,
            **summarize(times),
            "context_fraction_mean": float(np.mean(fractions)),
        }

    # The packed predictor's layout (distinct queries), made by the training loop next to each batch of masks.
    sampled, layout_times, distinct = ours(batch, generator), [], []
    for _ in range(args.runs):
        start = time.perf_counter()
        layout = sampled.with_queries().queries
        layout_times.append(time.perf_counter() - start)
        distinct.append(layout.query_rows.numel() / batch)
    layout_summary = summarize(layout_times)

    ours_summary, reference_summary = summarize(ours_times), summarize(reference_times)
    ratio = reference_summary["median_ms"] / ours_summary["median_ms"]
    result = {
        "machine": {
            "cpu": cpu_name(),
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "torch_threads": torch.get_num_threads(),
        },
        "settings": {
            "batch_size": batch,
            "image_size": 224,
            "patch_size": 16,
            "grid": [14, 14],
            "num_targets": 4,
            "target_scale": [0.15, 0.2],
            "target_aspect": [0.75, 1.5],
            "context_scale": [0.85, 1.0],
            "min_keep": 10,
            "runs": args.runs,
        },
        "multiblock": {**ours_summary, "context_tokens_mean": float(np.mean(ours_context))},
        "ijepa_reference_loop": {**reference_summary, "context_tokens_mean": float(np.mean(reference_context))},
        "speedup_median": ratio,
        "query_layout": {**layout_summary, "distinct_queries_mean": float(np.mean(distinct)),
                         "queries": int(sum(idx[0].numel() for idx in sampled.target_idx))},
        **hierarchical,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"{cpu_name()}, torch {torch.__version__}, 1 thread, batch {batch}, median of {args.runs} runs")
    print(f"{'generator':40s} {'median ms':>10s} {'p10':>8s} {'p90':>8s}  context")
    rows = [
        ("I-JEPA reference loop (14x14)", reference_summary, f"K={np.mean(reference_context):.1f}"),
        ("MultiBlockMaskGenerator (14x14)", ours_summary, f"K={np.mean(ours_context):.1f}"),
    ]
    rows += [(name, h, f"{h['context_fraction_mean']:.1%} of grid") for name, h in hierarchical.items()]
    rows.append(("query layout (training loop, per batch)", layout_summary,
                 f"{np.mean(distinct):.1f} distinct of {result['query_layout']['queries']} queries"))
    for name, s, context in rows:
        print(f"{name:40s} {s['median_ms']:10.3f} {s['p10_ms']:8.3f} {s['p90_ms']:8.3f}  {context}")
    print(f"speedup over the reference (median): {ratio:.1f}x; wrote {args.out}")


if __name__ == "__main__":
    main()
