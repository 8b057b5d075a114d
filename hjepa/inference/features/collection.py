"""Reads what ``hjepa-embed`` writes (manifest, Parquet shards, FAISS indexes) for ``hjepa-serve --gallery``.

On this floor so serving need not import embedding; pyarrow and faiss load on first use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hjepa.errors import HJEPAError

MANIFEST_NAME = "manifest.json"
ERRORS_NAME = "errors.jsonl"
INPUTS_NAME = "inputs.parquet"
INDEX_DIR = "index"
INDEX_RECORD = "index.json"
INDEX_IDS = "ids.parquet"
SHARD_GLOB = "part-*.parquet"
RAY_GLOB = "ray-*"
FORMAT = "hjepa-embed/1"


class CollectionError(HJEPAError, ValueError):
    """Not a finished ``hjepa-embed`` output, or not this model's."""


def level_column(level: int) -> str:
    return f"level{level}"


def grid_column(level: int) -> str:
    return f"level{level}_grid"


def read_manifest(directory: Path) -> dict[str, Any]:
    """``DIR/manifest.json``, plain JSON."""
    path = Path(directory) / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise CollectionError(f"{directory} holds no {MANIFEST_NAME}; it is not an hjepa-embed output") from None
    except json.JSONDecodeError as exc:
        raise CollectionError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CollectionError(f"{path} is not an hjepa-embed manifest (format {FORMAT!r} expected)")
    return manifest


def is_collection(directory: Path) -> bool:
    return (Path(directory) / MANIFEST_NAME).is_file()


def shard_files(directory: Path) -> list[Path]:
    """Finished shards: temporaries and unfinished Ray rounds are hidden (``.part-*``, ``.ray-*``)."""
    directory = Path(directory)
    files = sorted(directory.glob(SHARD_GLOB))
    for round_dir in sorted(p for p in directory.glob(RAY_GLOB) if p.is_dir()):
        files.extend(sorted(round_dir.glob("*.parquet")))
    return files


def read_columns(directory: Path, columns: list[str]) -> Any:
    """The columns of every shard, in name order, as one table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = [pq.read_table(path, columns=columns) for path in shard_files(directory)]
    tables = [table for table in tables if table.num_rows]
    if not tables:
        return pa.table({name: [] for name in columns})
    return pa.concat_tables(tables, promote_options="permissive")


def feature_matrix(column: Any) -> np.ndarray:
    """A fixed-size-list column -> float32 ``[N, D]``, one copy."""
    column = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    width = column.type.list_size
    return np.asarray(column.flatten().to_numpy(zero_copy_only=False), np.float32).reshape(-1, width)


def l2_normalise(features: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return (features / np.maximum(norms, 1e-12)).astype(np.float32)


@dataclass
class SearchIndex:
    """A FAISS index of one level's normalised pooled features; ``ids[i]`` names row ``i``."""

    index: Any
    ids: list
    kind: str
    level: int
    dim: int

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``queries [Q, D]`` -> cosine ``[Q, k]``, rows ``[Q, k]`` (-1 past the end)."""
        queries = l2_normalise(np.atleast_2d(np.asarray(queries, np.float32)))
        if queries.shape[1] != self.dim:
            raise CollectionError(f"query has {queries.shape[1]} dims but the level-{self.level} index has {self.dim}")
        scores, rows = self.index.search(queries, max(1, min(k, len(self.ids))))
        return scores, rows


def index_record(directory: Path) -> dict[str, Any]:
    path = Path(directory) / INDEX_DIR / INDEX_RECORD
    if not path.is_file():
        raise CollectionError(f"{directory} has no search index; run hjepa-embed with --index")
    return json.loads(path.read_text())


def load_index(directory: Path, level: int) -> SearchIndex:
    """The level's index and ids; ``CollectionError`` without ``--index``."""
    import faiss
    import pyarrow.parquet as pq

    record = index_record(directory)
    entry = record["levels"].get(str(level))
    if entry is None:
        raise CollectionError(f"{directory} has no index at level {level}; indexed levels: {sorted(record['levels'])}")
    folder = Path(directory) / INDEX_DIR
    index = faiss.read_index(str(folder / entry["file"]))
    if "nprobe" in entry:
        faiss.extract_index_ivf(index).nprobe = int(entry["nprobe"])
    ids = pq.read_table(folder / INDEX_IDS, columns=["id"]).column("id").to_pylist()
    if index.ntotal != len(ids):
        raise CollectionError(f"{folder / entry['file']} holds {index.ntotal} rows but {INDEX_IDS} lists {len(ids)}")
    return SearchIndex(index, ids, entry["kind"], level, int(entry["dim"]))
