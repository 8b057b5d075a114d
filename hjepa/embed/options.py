"""What the user asked (``EmbedOptions``) and what the engines run (``EmbedJob``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hjepa.embed.inputs import Listing
from hjepa.embed.preprocess import DEFAULT_MAX_PIXELS, Preprocessing
from hjepa.embed.shards import ShardPlan
from hjepa.errors import OptionError

ENGINES = ("local", "ray")
DEFAULT_SHARD_SIZE = 10_000
EXACT_INDEX_MAX_ROWS = 1_000_000  # FAISS's guidance for an exact index


def default_workers() -> int:
    return max(1, min(8, (os.cpu_count() or 2) - 1))


@dataclass
class EmbedOptions:
    """``hjepa-embed SOURCE INPUT --out DIR``; fields as its ``--help``."""

    source: str
    input: str
    out: str
    levels: str = "all"
    grid: bool = False
    backend: str = "auto"
    device: str = "auto"
    batch_size: int = 64
    workers: int = field(default_factory=default_workers)
    shard_size: int = DEFAULT_SHARD_SIZE
    engine: str = "local"
    resume: bool = False
    overwrite: bool = False
    index: bool = False
    exact_index_max_rows: int = EXACT_INDEX_MAX_ROWS
    split: str = "train"
    data_dir: str | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    progress: bool = True
    ray_actors: int | None = None
    gpus_per_actor: float = 0.0

    def check(self) -> None:
        """Refuses bad values before anything is opened or written."""
        if self.engine not in ENGINES:
            raise OptionError(f"unknown engine {self.engine!r}; valid: {', '.join(ENGINES)}")
        for name in ("batch_size", "shard_size", "max_pixels", "exact_index_max_rows"):
            if getattr(self, name) < 1:
                raise OptionError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.workers < 0:
            raise OptionError(f"--workers must be >= 0, got {self.workers}")
        if self.ray_actors is not None and self.ray_actors < 1:
            raise OptionError(f"--ray-actors must be >= 1, got {self.ray_actors}")


@dataclass
class EmbedJob:
    """The listing, shard plan, levels, and how a worker opens the model."""

    directory: Path
    listing: Listing
    plan: ShardPlan
    levels: list[int]
    grid: bool
    preprocessing: Preprocessing
    dims: dict[int, int]
    grid_sizes: dict[int, int] | None
    options: EmbedOptions
    dataset: Any = None  # local engine, when INPUT is a dataset
