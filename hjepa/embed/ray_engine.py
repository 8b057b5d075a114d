"""The Ray Data engine: the same job past one machine, a round of shards at a time (``RAY_ADDRESS``: the cluster).

A round is staged and renamed whole, so a killed one counts nothing; SOURCE and INPUT must be on shared storage.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from collections.abc import Callable
from typing import Any

import numpy as np

from hjepa.embed.options import EmbedJob
from hjepa.embed.preprocess import Preprocessing, Skip, preprocess_paths
from hjepa.embed.shards import ROUND_RECORD, build_table, shard_record
from hjepa.errors import HJEPAError
from hjepa.files import commit_directory

ROUND_SHARDS = 16  # what a killed run loses


class RayUnavailableError(HJEPAError, RuntimeError):
    """``--engine ray`` without Ray installed."""


def decode_batch(batch: dict[str, np.ndarray], preprocessing: Preprocessing, dataset: dict | None) -> dict:
    """``{position, id, path}`` -> ``{position, id, pixels [b, 3, S, S], reason, message}``."""
    if dataset is not None:
        pixels, skips = _dataset_pixels(batch["position"], preprocessing, **dataset)
    else:
        pixels, skips = preprocess_paths([str(p) for p in batch["path"]], preprocessing)
    size = preprocessing.img_size
    full = np.zeros((len(skips), 3, size, size), np.float32)
    full[[i for i, skip in enumerate(skips) if skip is None]] = pixels
    return {"position": batch["position"], "id": batch["id"], "pixels": full,
            "reason": np.array([skip.reason if skip else "" for skip in skips], object),
            "message": np.array([skip.message if skip else "" for skip in skips], object)}


@functools.lru_cache(maxsize=2)
def _dataset(name: str, split: str, data_dir: str | None) -> Any:
    from hjepa.data import build_dataset

    return build_dataset(name, split, data_dir, download=False)


def _dataset_pixels(positions: np.ndarray, preprocessing: Preprocessing, name: str, split: str,
                    data_dir: str | None) -> tuple[np.ndarray, list[Skip | None]]:
    import torch

    data = _dataset(name, split, data_dir)
    images = torch.stack([data[int(p)][0] for p in positions])
    return preprocessing.transform()(images).numpy(), [None] * len(positions)


class EmbedActor:
    """One runtime per actor: a decoded batch -> features, skipped rows kept for the driver to list."""

    def __init__(self, source: str, backend: str, device: str, levels: list[int], grid: bool) -> None:
        import torch

        from hjepa.inference import open_runtime

        torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
        self.runtime = open_runtime(source, backend=backend, device=device)
        self.levels, self.grid = levels, grid

    def __call__(self, batch: dict[str, np.ndarray]) -> Any:
        import pyarrow as pa

        good = np.flatnonzero(batch["reason"] == "")
        out = self.runtime.embed_levels(batch["pixels"][good], self.levels, with_tokens=self.grid) if len(good) else {}
        width = {level: self.runtime.metadata.embed_dims[level] for level in self.levels}
        pooled, grids = {}, {}
        for level in self.levels:
            tokens, vectors = out.get(level, (None, None))
            pooled[level] = _spread(vectors, good, len(batch["id"]), width[level])
            if self.grid:
                cells = int(np.prod(self.runtime.metadata.grids[level])) * width[level]
                grids[level] = _spread(None if tokens is None else tokens.reshape(len(good), -1), good,
                                       len(batch["id"]), cells)
        table = build_table(_ids(batch["id"]), pooled, grids if self.grid else None)
        table = table.append_column("position", pa.array(batch["position"].astype(np.int64)))
        table = table.append_column("reason", pa.array([str(r) for r in batch["reason"]], pa.string()))
        return table.append_column("message", pa.array([str(m) for m in batch["message"]], pa.string()))


def _spread(values: np.ndarray | None, rows: np.ndarray, count: int, width: int) -> np.ndarray:
    full = np.zeros((count, width), np.float32)
    if values is not None and len(rows):
        full[rows] = values.reshape(len(rows), -1)
    return full


def _ids(values: np.ndarray) -> list:
    return [int(v) for v in values] if np.issubdtype(np.asarray(values).dtype, np.integer) else [str(v) for v in values]


def run_ray(job: EmbedJob, shards: list[int], on_shard: Callable[[dict], None]) -> None:
    """``ROUND_SHARDS`` at a time; ``on_shard`` per finished shard."""
    try:
        import ray
    except ModuleNotFoundError:
        raise RayUnavailableError("--engine ray needs Ray: pip install 'hjepa[scale]' (or 'ray[data]')") from None
    if not ray.is_initialized():  # RAY_ADDRESS names the cluster
        ray.init(address=os.environ.get("RAY_ADDRESS"), include_dashboard=False, log_to_driver=False)
    for start in range(0, len(shards), ROUND_SHARDS):
        for record in _run_round(job, shards[start : start + ROUND_SHARDS]):
            on_shard(record)


def _actors(job: EmbedJob) -> int:
    import ray

    if job.options.ray_actors:
        return job.options.ray_actors
    if job.options.gpus_per_actor > 0:
        return max(1, int(ray.cluster_resources().get("GPU", 0) / job.options.gpus_per_actor))
    return max(1, int(ray.cluster_resources().get("CPU", 2)) // 4)


def _run_round(job: EmbedJob, shards: list[int]) -> list[dict]:
    """Read, decode, embed, stage, then rename into place with its record."""
    import ray

    positions = job.plan.positions(shards)
    listing = job.listing
    rows = [{"position": p, "id": listing.ids[p], "path": listing.paths[p] if listing.paths else ""}
            for p in positions]
    dataset = None if listing.kind != "dataset" else {
        "name": listing.dataset, "split": listing.split, "data_dir": job.options.data_dir}
    opts = job.options
    data = ray.data.from_items(rows).map_batches(
        decode_batch, batch_size=opts.batch_size, batch_format="numpy",
        fn_kwargs={"preprocessing": job.preprocessing, "dataset": dataset})
    data = data.map_batches(
        EmbedActor, batch_size=opts.batch_size, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=_actors(job)), num_gpus=opts.gpus_per_actor or None,
        fn_constructor_kwargs={"source": opts.source, "backend": opts.backend, "device": opts.device,
                               "levels": job.levels, "grid": job.grid}).materialize()
    from ray.data.expressions import col

    skipped = data.filter(expr=col("reason") != "").select_columns(["position", "id", "reason", "message"]).take_all()
    name = f"ray-{shards[0]:05d}-{shards[-1]:05d}"
    staging = job.directory / f".{name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    data.filter(expr=col("reason") == "").drop_columns(["position", "reason", "message"]).write_parquet(str(staging))
    records = _records(job, shards, positions, skipped)
    (staging / ROUND_RECORD).write_text(json.dumps({"shards": records}))
    commit_directory(staging, job.directory / name)
    return records


def _records(job: EmbedJob, shards: list[int], positions: list[int], skipped: list[dict]) -> list[dict]:
    size = job.plan.size
    by_shard: dict[int, list[dict]] = {index: [] for index in shards}
    for row in sorted(skipped, key=lambda row: row["position"]):
        item_id = job.listing.ids[int(row["position"])]
        by_shard[int(row["position"]) // size].append({"id": item_id, "reason": row["reason"],
                                                       "message": row["message"]})
    counts = np.bincount(np.asarray(positions, np.int64) // size, minlength=max(shards) + 1)
    return [shard_record(index, job.plan, int(counts[index]) - len(by_shard[index]), by_shard[index])
            for index in shards]
