"""Parquet shards of positions ``[i * size, (i + 1) * size)``, each one atomic file with its record in the footer,
so ``--resume`` embeds only the shards not there.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hjepa.embed.preprocess import Skip
from hjepa.files import atomic_open
from hjepa.inference.features.collection import RAY_GLOB, SHARD_GLOB, grid_column, level_column

SHARD_META_KEY = b"hjepa.shard"
ROUND_RECORD = "round.json"


def shard_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


@dataclass(frozen=True)
class ShardPlan:
    """``total`` listing positions cut into shards of ``size``."""

    total: int
    size: int

    @property
    def count(self) -> int:
        return math.ceil(self.total / self.size)

    def bounds(self, index: int) -> tuple[int, int]:
        return index * self.size, min(self.total, (index + 1) * self.size)

    def pending(self, done: set[int]) -> list[int]:
        return [index for index in range(self.count) if index not in done]

    def positions(self, shards: list[int]) -> list[int]:
        return [p for index in shards for p in range(*self.bounds(index))]


def feature_array(values: np.ndarray) -> Any:
    """``[n, ...]`` -> fixed-size-list float32, a list per row."""
    import pyarrow as pa

    values = np.ascontiguousarray(values, np.float32).reshape(values.shape[0], int(np.prod(values.shape[1:])))
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), pa.float32()), values.shape[1])


def build_table(ids: list, pooled: dict[int, np.ndarray], grids: dict[int, np.ndarray] | None = None) -> Any:
    """``id``, ``level{K}`` and, gridded, ``level{K}_grid`` ``[N_k * D]``."""
    import pyarrow as pa

    id_type = pa.int64() if ids and isinstance(ids[0], (int, np.integer)) else pa.string()
    columns: dict[str, Any] = {"id": pa.array(ids, id_type)}
    for level in sorted(pooled):
        columns[level_column(level)] = feature_array(pooled[level])
        if grids is not None and level in grids:
            columns[grid_column(level)] = feature_array(grids[level])
    return pa.table(columns)


def write_shard(directory: Path, index: int, table: Any, record: dict) -> Path:
    """Writes the shard atomically, ``record`` in its metadata."""
    import pyarrow.parquet as pq

    path = directory / shard_name(index)
    metadata = dict(table.schema.metadata or {})
    metadata[SHARD_META_KEY] = json.dumps(record).encode()
    with atomic_open(path, "wb") as handle:
        pq.write_table(table.replace_schema_metadata(metadata), handle)
    return path


def shard_record(index: int, plan: ShardPlan, rows: int, skipped: list[dict]) -> dict:
    start, stop = plan.bounds(index)
    return {"index": index, "start": start, "stop": stop, "rows": rows, "skipped": skipped}


def skip_entry(item_id: Any, skip: Skip) -> dict:
    return {"id": item_id, "reason": skip.reason, "message": skip.message}


def finished_shards(directory: Path) -> dict[int, dict]:
    """Index -> record of every finished shard, local or Ray."""
    import pyarrow.parquet as pq

    done: dict[int, dict] = {}
    for path in sorted(directory.glob(SHARD_GLOB)):
        metadata = pq.read_schema(path).metadata or {}
        if SHARD_META_KEY in metadata:
            record = json.loads(metadata[SHARD_META_KEY])
            done[int(record["index"])] = record
    for round_dir in sorted(p for p in directory.glob(RAY_GLOB) if p.is_dir()):
        if (round_dir / ROUND_RECORD).is_file():
            for record in json.loads((round_dir / ROUND_RECORD).read_text())["shards"]:
                done[int(record["index"])] = record
    return done


@dataclass
class ShardBuffer:
    """A shard's rows as they arrive; full when every position is done."""

    index: int
    start: int
    stop: int
    ids: list = field(default_factory=list)
    pooled: dict[int, list[np.ndarray]] = field(default_factory=dict)
    grids: dict[int, list[np.ndarray]] = field(default_factory=dict)
    skipped: list[dict] = field(default_factory=list)
    seen: int = 0

    @property
    def full(self) -> bool:
        return self.seen == self.stop - self.start

    def add(self, ids: list, pooled: dict[int, np.ndarray], grids: dict[int, np.ndarray], skipped: list[dict]) -> None:
        self.ids.extend(ids)
        for level, values in pooled.items():
            self.pooled.setdefault(level, []).append(values)
        for level, values in grids.items():
            self.grids.setdefault(level, []).append(values)
        self.skipped.extend(skipped)
        self.seen += len(ids) + len(skipped)

    def table(self, dims: dict[int, int], grid_sizes: dict[int, int] | None) -> Any:
        pooled = {level: _stack(self.pooled.get(level), (dims[level],)) for level in dims}
        grids = None
        if grid_sizes is not None:
            grids = {level: _stack(self.grids.get(level), (grid_sizes[level],)) for level in grid_sizes}
        return build_table(self.ids, pooled, grids)


def _stack(parts: list[np.ndarray] | None, tail: tuple[int, ...]) -> np.ndarray:
    parts = [part.reshape(part.shape[0], *tail) for part in parts or [] if len(part)]
    return np.concatenate(parts) if parts else np.zeros((0, *tail), np.float32)
