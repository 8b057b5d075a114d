"""INPUT (a folder, a path list or a dataset) -> an ordered listing, saved once per job so that files added before a
resume cannot shift shard boundaries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hjepa.data.imagefolder import IMAGE_EXTENSIONS
from hjepa.errors import OptionError
from hjepa.inference.features.collection import INPUTS_NAME

LIST_SUFFIXES = (".txt", ".lst", ".csv")
PARQUET_SUFFIXES = (".parquet", ".pq")
PATH_COLUMNS = ("path", "filepath", "file", "image_path")


@dataclass
class Listing:
    """Files have ``ids`` as listed and absolute ``paths``; a dataset has indices as ``ids`` and no paths."""

    kind: str
    description: str
    ids: list = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    dataset: str | None = None
    split: str | None = None
    data_dir: str | None = None
    duplicates: int = 0

    def __len__(self) -> int:
        return len(self.ids)

    def spec(self) -> dict:
        """The input's identity; resume refuses another."""
        return {"kind": self.kind, "input": self.description, "dataset": self.dataset, "split": self.split,
                "count": len(self.ids)}


def describe_input(source: str, split: str = "train") -> str:
    """An absolute path, or ``dataset:split``."""
    path = Path(source).expanduser()
    return str(path.resolve()) if path.exists() else f"{source}:{split}"


def list_input(source: str, split: str = "train", data_dir: str | None = None) -> Listing:
    """A folder (recursive, sorted, hidden skipped), a ``.txt`` or Parquet path list, else a dataset name."""
    path = Path(source).expanduser()
    if path.is_dir():
        return _folder(path)
    if path.is_file():
        if path.suffix.lower() in PARQUET_SUFFIXES:
            return _dedupe(Listing("parquet", str(path.resolve())), _parquet_paths(path), path.parent)
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines()]
        entries = [line for line in lines if line and not line.startswith("#")]
        return _dedupe(Listing("list", str(path.resolve())), entries, path.parent)
    if len(path.parts) > 1 or path.suffix.lower() in LIST_SUFFIXES + PARQUET_SUFFIXES:
        raise OptionError(f"input {source} does not exist; expected a folder, a path list (.txt / .parquet) or a "
                          "dataset name")
    return _dataset(source, split, data_dir)


def _folder(root: Path) -> Listing:
    found = []
    for path in root.rglob("*"):
        relative = path.relative_to(root)
        if path.suffix.lower() in IMAGE_EXTENSIONS and not any(p.startswith(".") for p in relative.parts):
            if path.is_file():
                found.append((relative.as_posix(), path))
    if not found:
        raise OptionError(f"folder {root} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    found.sort()
    return Listing("folder", str(root.resolve()), [i for i, _ in found], [str(p.resolve()) for _, p in found])


def _parquet_paths(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    names = pq.read_schema(path).names
    column = next((name for name in PATH_COLUMNS if name in names), None)
    if column is None:
        raise OptionError(f"{path} has no path column; expected one of {', '.join(PATH_COLUMNS)}, found {names[:8]}")
    return [str(value) for value in pq.read_table(path, columns=[column]).column(column).to_pylist() if value]


def _dedupe(listing: Listing, entries: list[str], base: Path) -> Listing:
    """Ids as written, each once: an id appears once in the output."""
    unique = list(dict.fromkeys(entries))
    if not unique:
        raise OptionError(f"{listing.description} lists no paths")
    listing.ids = unique
    listing.paths = [str((base / entry).resolve()) if not Path(entry).is_absolute() else entry for entry in unique]
    listing.duplicates = len(entries) - len(unique)
    return listing


def _dataset(name: str, split: str, data_dir: str | None) -> Listing:
    from hjepa.data import DATASETS, build_dataset

    if name not in DATASETS.names():
        raise OptionError(f"input {name!r} is neither a folder, a path list nor a dataset; datasets: "
                          f"{', '.join(DATASETS.names())}")
    data = build_dataset(name, split, data_dir, download=False)
    return Listing("dataset", f"{name}:{split}", list(range(len(data))), [], name, split, data_dir)


def save_listing(listing: Listing, directory: Path) -> None:
    """``inputs.parquet``, atomically; a dataset stores only ids."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from hjepa.files import atomic_open

    columns = {"id": listing.ids}
    if listing.paths:
        columns["path"] = listing.paths
    with atomic_open(directory / INPUTS_NAME, "wb") as handle:
        pq.write_table(pa.table(columns), handle)


def load_listing(directory: Path, spec: dict, data_dir: str | None = None) -> Listing:
    """The saved listing, in its original order."""
    import pyarrow.parquet as pq

    table = pq.read_table(directory / INPUTS_NAME)
    ids = table.column("id").to_pylist()
    paths = table.column("path").to_pylist() if "path" in table.column_names else []
    return Listing(spec["kind"], spec["input"], ids, paths, spec.get("dataset"), spec.get("split"), data_dir)
