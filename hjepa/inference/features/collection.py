"""An embedded collection on disk, as ``hjepa-embed`` writes it and ``hjepa-serve --gallery DIR`` reads it.

``DIR/manifest.json`` (model, preprocessing, levels, dims, rows), Parquet shards (``part-NNNNN.parquet`` from the
local engine, ``ray-NNNNN-NNNNN/*.parquet`` from the Ray engine) with ``id`` and ``level{K}`` columns, and
``DIR/index/`` (one FAISS index per level plus the ids in index order). This module is the reader, on the inference
floor so that serving can read what embedding wrote without importing it; pyarrow and faiss load on first use.
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
    """A folder that is not a finished ``hjepa-embed`` output, or one that does not fit the model asking."""


def level_column(level: int) -> str:
    return f"level{level}"


def grid_column(level: int) -> str:
    return f"level{level}_grid"


def read_manifest(directory: Path) -> dict[str, Any]:
    """``DIR/manifest.json`` as a dict (plain JSON: nothing is unpickled)."""
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
    """Every finished shard file: temporaries are hidden (``.part-*``) and unfinished Ray rounds are ``.ray-*``."""
    directory = Path(directory)
    files = sorted(directory.glob(SHARD_GLOB))
    for round_dir in sorted(p for p in directory.glob(RAY_GLOB) if p.is_dir()):
        files.extend(sorted(round_dir.glob("*.parquet")))
    return files


def read_columns(directory: Path, columns: list[str]) -> Any:
    """The named columns of every shard as one ``pyarrow.Table`` (shards in name order)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = [pq.read_table(path, columns=columns) for path in shard_files(directory)]
    tables = [table for table in tables if table.num_rows]
    if not tables:
        return pa.table({name: [] for name in columns})
    return pa.concat_tables(tables, promote_options="permissive")


def feature_matrix(column: Any) -> np.ndarray:
    """A fixed-size-list float32 column -> ``[N, D]`` float32 (one copy of the flat values)."""
    column = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    width = column.type.list_size
    return np.asarray(column.flatten().to_numpy(zero_copy_only=False), np.float32).reshape(-1, width)


def l2_normalise(features: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return (features / np.maximum(norms, 1e-12)).astype(np.float32)


@dataclass
class SearchIndex:
    """A FAISS index over one level's L2-normalised pooled features; ``ids[i]`` is the id of index row ``i``."""

    index: Any
    ids: list
    kind: str
    level: int
    dim: int

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``queries [Q, D]`` -> (cosine similarities ``[Q, k]``, index rows ``[Q, k]``; -1 where fewer exist)."""
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
    """The level's FAISS index and its ids (``CollectionError`` when the folder was embedded without ``--index``)."""
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
