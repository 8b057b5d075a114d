"""The local engine: workers decode and normalise, so the encoder never waits on JPEGs; a shard is written the
moment its last row is done.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from hjepa.embed.options import EmbedJob
from hjepa.embed.preprocess import Collate, ItemDataset, Skip, worker_init
from hjepa.embed.shards import ShardBuffer, shard_record, skip_entry, write_shard
from hjepa.inference.runtimes.runtime import Runtime

PREFETCH_BATCHES = 4  # per worker: rides out a slow file, holds little


def run_local(job: EmbedJob, runtime: Runtime, shards: list[int], on_shard: Callable[[dict], None]) -> None:
    """Embeds and writes ``shards``, calling ``on_shard(record)`` after each."""
    positions = job.plan.positions(shards)
    if not positions:
        return
    loader = DataLoader(
        ItemDataset(job.listing.paths, job.dataset, job.preprocessing),
        batch_size=job.options.batch_size,
        sampler=positions,
        num_workers=job.options.workers,
        collate_fn=Collate(job.preprocessing),
        worker_init_fn=worker_init if job.options.workers else None,
        prefetch_factor=PREFETCH_BATCHES if job.options.workers else None,
    )
    buffers = {index: ShardBuffer(index, *job.plan.bounds(index)) for index in shards}
    bar = tqdm(total=len(positions), unit="img", unit_scale=True, desc="embed", disable=not job.options.progress,
               dynamic_ncols=True)
    with bar, torch.inference_mode():
        for good, batch, skipped in loader:
            outputs = runtime.embed_levels(batch, job.levels, with_tokens=job.grid) if good else {}
            route(job, buffers, good, outputs, skipped)
            for index in [index for index, buffer in buffers.items() if buffer.full]:
                buffer = buffers.pop(index)
                table = buffer.table(job.dims, job.grid_sizes)
                record = shard_record(index, job.plan, len(buffer.ids), buffer.skipped)
                write_shard(job.directory, index, table, record)
                on_shard(record)
            bar.update(len(good) + len(skipped))


def route(
    job: EmbedJob,
    buffers: dict[int, ShardBuffer],
    good: list[int],
    outputs: dict[int, tuple[np.ndarray | None, np.ndarray]],
    skipped: list[tuple[int, Skip]],
) -> None:
    """A batch may straddle shards: route its rows to their buffers."""
    ids = job.listing.ids
    shard_of_good = np.asarray(good, np.int64) // job.plan.size
    for index in sorted(set(shard_of_good.tolist()) | {p // job.plan.size for p, _ in skipped}):
        rows = np.flatnonzero(shard_of_good == index)
        pooled = {level: pooled[rows] for level, (_, pooled) in outputs.items()}
        grids = {level: tokens[rows] for level, (tokens, _) in outputs.items() if tokens is not None}
        lost = [skip_entry(ids[p], skip) for p, skip in skipped if p // job.plan.size == index]
        buffers[index].add([ids[good[r]] for r in rows], pooled, grids, lost)
