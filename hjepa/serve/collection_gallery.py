"""A gallery over an ``hjepa-embed`` folder: nothing re-embedded, only the hits decoded."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hjepa.inference.features.collection import (
    INPUTS_NAME,
    CollectionError,
    SearchIndex,
    feature_matrix,
    index_record,
    l2_normalise,
    level_column,
    load_index,
    read_columns,
    read_manifest,
)
from hjepa.inference.runtimes.images import DEFAULT_MAX_PIXELS, ImageError, read_image
from hjepa.inference.runtimes.runtime import Runtime
from hjepa.serve.neighbour import Neighbour


class _ExactSearch(SearchIndex):
    """Exact search in memory, for a folder without ``--index``."""

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = l2_normalise(np.atleast_2d(np.asarray(queries, np.float32)))
        if queries.shape[1] != self.dim:
            raise CollectionError(f"query has {queries.shape[1]} dims but level {self.level} has {self.dim}")
        scores = queries @ self.index.T
        rows = np.argsort(-scores, axis=1, kind="stable")[:, : max(1, min(k, len(self.ids)))]
        return np.take_along_axis(scores, rows, axis=1), rows


class CollectionGallery:
    """``Gallery``'s API over an embedded collection."""

    def __init__(self, directory: str | Path, runtime: Runtime, data_dir: str | None = None) -> None:
        self.directory = Path(directory)
        self.data_dir = data_dir
        self._dataset = None
        self.manifest = read_manifest(self.directory)
        if self.manifest.get("status") != "complete":
            raise CollectionError(f"{self.directory} is an unfinished embed job; finish it with hjepa-embed --resume")
        self.levels = [int(level) for level in self.manifest["levels"]]
        dims = {int(k): int(v) for k, v in self.manifest["dims"].items()}
        served = runtime.metadata.embed_dims
        wrong = [level for level in self.levels if level in served and served[level] != dims[level]]
        if wrong or not set(self.levels) & set(served):
            raise CollectionError(f"{self.directory} was embedded by another model (levels {self.levels}, dims "
                                  f"{dims}); this model has dims {dict(served)}")
        self.same_model = self.manifest["model"].get("identity") == runtime.identity
        self._searches: dict[int, SearchIndex] = {}
        self._paths: dict | None = None
        try:
            kind = ", ".join(sorted({e["kind"] for e in index_record(self.directory)["levels"].values()}))
        except CollectionError:
            kind = "no index: exact search over the shards"
        note = "" if self.same_model else "; embedded by another model file"
        self.description = f"embedded collection {self.directory.name} ({len(self)} images, {kind}{note})"

    def __len__(self) -> int:
        return int(self.manifest["rows"])

    def search_index(self, level: int) -> SearchIndex:
        """The level's index, loaded once."""
        if level not in self.levels:
            raise CollectionError(f"{self.directory} holds levels {self.levels}, not level {level}")
        if level not in self._searches:
            try:
                self._searches[level] = load_index(self.directory, level)
            except CollectionError:  # no --index: exact search over the stored features
                table = read_columns(self.directory, ["id", level_column(level)])
                features = l2_normalise(feature_matrix(table.column(level_column(level))))
                ids = table.column("id").to_pylist()
                self._searches[level] = _ExactSearch(features, ids, "exact", level, features.shape[1])
        return self._searches[level]

    def warm(self, runtime: Runtime, level: int) -> None:
        """Load now, not on the first request; absent levels are skipped."""
        if level in self.levels:
            self.search_index(level)

    def neighbours(self, runtime: Runtime, pooled: np.ndarray, level: int, k: int = 8) -> list[Neighbour]:
        """The ``k`` nearest to ``pooled [D]``, decoded from their paths."""
        search = self.search_index(runtime.check_level(level))
        scores, rows = search.search(np.asarray(pooled, np.float32).reshape(1, -1), k)
        hits = []
        for score, row in zip(scores[0], rows[0], strict=True):
            if row < 0:
                continue
            item_id = search.ids[int(row)]
            hits.append(Neighbour(self.image(item_id), str(item_id), float(score), int(row)))
        return hits

    def image(self, item_id: object) -> np.ndarray:
        """Its file as listed when embedded, or the dataset item."""
        job = self.manifest["job"]["listing"]
        if job["kind"] == "dataset":
            if self._dataset is None:
                from hjepa.data import build_dataset

                self._dataset = build_dataset(job["dataset"], job["split"], self.data_dir, download=False)
            pixels = self._dataset[int(item_id)][0]
            array = pixels.permute(1, 2, 0).numpy()
            return np.repeat(array, 3, axis=2) if array.shape[2] == 1 else array
        if self._paths is None:
            import pyarrow.parquet as pq

            table = pq.read_table(self.directory / INPUTS_NAME, columns=["id", "path"])
            self._paths = dict(zip(table.column("id").to_pylist(), table.column("path").to_pylist(), strict=True))
        try:
            return read_image(self._paths[item_id], max_pixels=DEFAULT_MAX_PIXELS)
        except (ImageError, KeyError):  # moved since: a grey square
            return np.full((64, 64, 3), 128, np.uint8)
