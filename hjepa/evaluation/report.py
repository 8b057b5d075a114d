"""Evaluation reports: one JSON document per run (string keys, so it equals its ``json.load``), a table per level::

    {"source": "runs/x/checkpoints/last.safetensors", "dataset": "cifar100", "hjepa_version": "0.1.0",
     "splits": {"train": 50000, "test": 10000},
     "levels": {"0": {"knn": {"20": {"top1": 41.2, "top5": 70.3}},
                      "linear": {"top1": 45.0, "top5": 75.1, "best_lr": 0.01, ...},
                      "logreg": {"top1": 44.2, "top5": 74.0, ...}}},
     "timings": {"extract_s": 12.3, "knn_s": 1.2}}
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

import hjepa
from hjepa.errors import HJEPAError
from hjepa.files import atomic_write_text

_PROBES = ("linear", "logreg")


def to_jsonable(value: Any) -> Any:
    """Nested results in JSON types: string keys, numbers for tensors, None for NaN."""
    if isinstance(value, Mapping):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(item) for item in value]
    if isinstance(value, (torch.Tensor, np.ndarray, np.generic)):
        return to_jsonable(value.tolist())
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; the table shows "-"
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store a {type(value).__name__} in an evaluation report: {value!r}")


def build_report(
    source: str | Path,
    dataset: str,
    splits: Mapping[str, int],
    levels: Mapping[int, Mapping[str, Any]],
    timings: Mapping[str, float] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """``levels[level]`` holds ``"knn"``, ``"linear"``, ``"logreg"`` results; ``extra`` adds top-level fields."""
    report = {
        "source": str(source),
        "dataset": dataset,
        "hjepa_version": hjepa.__version__,
        "splits": dict(splits),
        "levels": {int(level): results for level, results in sorted(levels.items(), key=lambda item: int(item[0]))},
        "timings": dict(timings or {}),
        **extra,
    }
    return to_jsonable(report)


def report_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per level: ``knn@K top1`` / ``top5`` for each K, then each probe's."""
    rows = []
    for level, results in sorted(report.get("levels", {}).items(), key=lambda item: int(item[0])):
        row: dict[str, Any] = {"level": int(level)}
        for k, accuracy in sorted(results.get("knn", {}).items(), key=lambda item: int(item[0])):
            row[f"knn@{k} top1"] = accuracy.get("top1")
            row[f"knn@{k} top5"] = accuracy.get("top5")
        for probe in _PROBES:
            if probe in results:
                row[f"{probe} top1"] = results[probe].get("top1")
                row[f"{probe} top5"] = results[probe].get("top5")
        rows.append(row)
    return rows


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def format_table(rows: list[Mapping[str, Any]], columns: list[str] | None = None) -> str:
    """An aligned plain-text table; columns default to every key in first-seen order, a missing cell is ``-``."""
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
    if not columns:
        return ""
    cells = [[_cell(row.get(column)) for column in columns] for row in rows]
    widths = [max([len(column)] + [len(line[i]) for line in cells]) for i, column in enumerate(columns)]
    numeric = [
        all(isinstance(row.get(column), (int, float)) or row.get(column) is None for row in rows) for column in columns
    ]

    def render(values: list[str]) -> str:
        parts = [v.rjust(w) if right else v.ljust(w) for v, w, right in zip(values, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    lines = [render(list(columns)), "  ".join("-" * width for width in widths)]
    lines += [render(line) for line in cells]
    return "\n".join(lines)


class ReportError(HJEPAError, ValueError):
    """A report path that cannot be written; one line."""


def check_report_path(path: str | Path) -> Path:
    """``path`` if its nearest existing folder is writable, else :class:`ReportError`; cheap, so check first."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise ReportError(f"cannot write the report to {path}: it is a directory")
    existing = path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ReportError(f"cannot write the report to {path}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ReportError(f"cannot write the report to {path}: {existing} is not writable")
    return path


def write_report(path: str | Path, report: Mapping[str, Any]) -> Path:
    """Indented JSON, atomically: a failed write leaves the earlier report as it was."""
    path = check_report_path(path)
    text = json.dumps(to_jsonable(report), indent=2, allow_nan=False) + "\n"
    try:
        return atomic_write_text(path, text)
    except OSError as error:
        raise ReportError(f"cannot write the report to {path}: {error}") from None


def read_report(path: str | Path) -> dict[str, Any]:
    """A report written by ``write_report``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no evaluation report at {path}")
    return json.loads(path.read_text(encoding="utf-8"))
