"""A FAISS index per level over normalised pooled features: exact up to ``exact_max_rows``, above IVF-PQ as
autofaiss sizes it; the choice is recorded in ``index/index.json``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from hjepa.files import atomic_open, atomic_write_text
from hjepa.inference.features.collection import (
    INDEX_DIR,
    INDEX_IDS,
    INDEX_RECORD,
    feature_matrix,
    l2_normalise,
    level_column,
    read_columns,
)

TRAIN_POINTS_PER_CENTROID = 39  # FAISS warns below this
MAX_TRAIN_ROWS = 500_000


def ivfpq_parameters(rows: int, dim: int) -> dict[str, int]:
    """``nlist``, ``m`` (dividing ``dim``), ``nbits`` and ``nprobe`` for ``rows`` vectors."""
    nlist = max(1, min(int(4 * math.sqrt(rows)), rows // TRAIN_POINTS_PER_CENTROID or 1, 65536))
    m = next(m for m in (64, 48, 32, 24, 16, 12, 8, 6, 4, 3, 2, 1) if dim % m == 0 and dim // m >= 2 or m == 1)
    nbits = max(1, min(8, int(math.log2(max(2, rows // TRAIN_POINTS_PER_CENTROID)))))
    return {"nlist": nlist, "m": m, "nbits": nbits, "nprobe": max(1, min(nlist, max(16, nlist // 16)))}


def build_index(features: np.ndarray, exact_max_rows: int) -> tuple[Any, dict[str, Any]]:
    """Normalised float32 ``[N, D]`` -> (an index of them in order, its record)."""
    import faiss

    rows, dim = features.shape
    if rows <= exact_max_rows:
        index = faiss.IndexFlatIP(dim)
        index.add(features)
        return index, {"kind": "exact", "factory": "Flat", "metric": "inner_product", "dim": dim}
    params = ivfpq_parameters(rows, dim)
    factory = f"IVF{params['nlist']},PQ{params['m']}x{params['nbits']}"
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    sample = features
    if rows > MAX_TRAIN_ROWS:  # more rows buy k-means nothing
        sample = features[np.random.default_rng(0).choice(rows, MAX_TRAIN_ROWS, replace=False)]
    index.train(sample)
    index.add(features)
    faiss.extract_index_ivf(index).nprobe = params["nprobe"]
    return index, {"kind": "ivfpq", "factory": factory, "metric": "inner_product", "dim": dim, **params}


def build_indexes(directory: Path, levels: list[int], exact_max_rows: int) -> dict[str, Any]:
    """``index/level{K}.faiss``, the ids in index order, and ``index.json``."""
    import faiss
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = read_columns(directory, ["id"] + [level_column(level) for level in levels])
    folder = directory / INDEX_DIR
    folder.mkdir(exist_ok=True)
    with atomic_open(folder / INDEX_IDS, "wb") as handle:
        pq.write_table(pa.table({"id": table.column("id")}), handle)
    record: dict[str, Any] = {"rows": table.num_rows, "exact_max_rows": exact_max_rows, "levels": {}}
    for level in levels:
        features = l2_normalise(feature_matrix(table.column(level_column(level))))
        index, entry = build_index(features, exact_max_rows)
        name = f"level{level}.faiss"
        with atomic_open(folder / name, "wb") as handle:
            handle.write(faiss.serialize_index(index).tobytes())
        record["levels"][str(level)] = {"file": name, **entry}
    atomic_write_text(folder / INDEX_RECORD, json.dumps(record, indent=2) + "\n")
    return record
