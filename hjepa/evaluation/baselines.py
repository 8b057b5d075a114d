"""Baseline rows on the same splits and protocol: centred raw pixels, and the same architecture untrained.

Pixels get the evaluated model's own preprocessing, so the rows differ only by the encoder.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hjepa.data import EvalTransform, dataset_stats
from hjepa.errors import OptionError
from hjepa.evaluation.report import report_rows
from hjepa.evaluation.sources import EvalSource, random_init_source, resolve_source

BASELINES = ("pixels", "random-init")


@dataclass
class _PixelMetadata:
    img_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    precision: str = "pixels"

    def to_dict(self) -> dict[str, Any]:
        return {"img_size": self.img_size, "mean": list(self.mean), "std": list(self.std)}


class _PixelRuntime:
    """The part of a runtime the evaluation reads: metadata, levels, back-end name."""

    backend = "pixels"
    levels = [0]

    def __init__(self, metadata: _PixelMetadata) -> None:
        self.metadata = metadata


class PixelSource(EvalSource):
    """Raw pixels as a feature source (one "level", 0): ``[B, 3, S, S]`` normalised -> ``[B, 3*S*S]`` centred
    (``[B, S*S]`` where the three channels are one grey picture: the same cosines)."""

    def __init__(self, img_size: int, mean: Sequence[float], std: Sequence[float]) -> None:
        metadata = _PixelMetadata(int(img_size), tuple(float(m) for m in mean), tuple(float(s) for s in std))
        digest = hashlib.sha256(json.dumps({"pixels": metadata.to_dict()}, sort_keys=True).encode()).hexdigest()
        super().__init__(runtime=_PixelRuntime(metadata), kind="pixels", name="pixels", source_hash=digest)

    @property
    def levels(self) -> list[int]:
        return [0]

    @property
    def backend(self) -> str:
        return "pixels"

    def transform(self) -> EvalTransform:
        meta = self.runtime.metadata
        return EvalTransform(meta.img_size, mean=meta.mean, std=meta.std)

    def embed_pooled(self, images: torch.Tensor, level: int) -> torch.Tensor:
        images = images.detach().float()
        if images.shape[1] > 1 and bool((images == images[:, :1]).all()):
            # A grey picture repeated per channel: one copy has the same mean and the same cosines (every dot
            # product and squared norm is that channel's times C), at 1/C of the k-NN's cost.
            images = images[:, :1]
        flat = images.flatten(1).cpu()
        return flat - flat.mean(1, keepdim=True)

    def embed_pooled_levels(self, images: torch.Tensor, levels: list[int]) -> dict[int, torch.Tensor]:
        return {level: self.embed_pooled(images, level) for level in levels}

    def embed_features(
        self, images: torch.Tensor, levels: list[int], feature: str = "pooled"
    ) -> dict[int, torch.Tensor]:
        """The picture's pixels whichever ``feature``: raw pixels are a grid already (one cell per pixel)."""
        return self.embed_pooled_levels(images, levels)

    def describe(self) -> dict:
        return {"kind": "pixels", "backend": "pixels", "source_hash": self.source_hash,
                "model": self.runtime.metadata.to_dict()}


def pixel_source_like(source: EvalSource | None, dataset: str) -> PixelSource:
    """Pixels preprocessed as ``source`` preprocesses (or, without a source, at the dataset's stats and 32 px)."""
    if source is not None:
        meta = source.runtime.metadata
        return PixelSource(meta.img_size, meta.mean, meta.std)
    mean, std = dataset_stats(dataset)
    return PixelSource(32, mean, std)


def random_init_like(source: EvalSource, device: str = "auto") -> EvalSource:
    """The source's own architecture (its saved config) at seed-0 initialisation."""
    config = getattr(source.runtime, "config", None)
    if config is None:
        raise OptionError(f"the random-init baseline needs the model's config, which {source.name} does not carry; "
                         "give --random-init CONFIG as its own run instead")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.yaml"
        config.to_yaml(path)
        baseline = random_init_source(str(path), device=device)
    baseline.name = "random-init"
    return baseline


def evaluate_with_baselines(
    source: str | Path | EvalSource | None,
    dataset: str,
    baselines: Sequence[str] = (),
    out: str | Path | None = None,
    random_init: str | None = None,
    backend: str = "auto",
    device: str = "auto",
    cache_dir: str | Path | None = None,
    **options: Any,
) -> dict[str, Any]:
    """``evaluate`` of ``source`` with each baseline's report under ``report["baselines"]``."""
    from hjepa.evaluation.report import check_report_path, write_report
    from hjepa.evaluation.run import evaluate

    unknown = [name for name in baselines if name not in BASELINES]
    if unknown:
        raise OptionError(f"unknown baseline {unknown[0]!r}; valid: {', '.join(BASELINES)}")
    if out is not None:
        check_report_path(out)
    if not isinstance(source, EvalSource):
        source = resolve_source(source, random_init=random_init, backend=backend, device=device)
    report = evaluate(source, dataset, cache_dir=cache_dir, **options)
    report["baselines"] = {}
    for name in dict.fromkeys(baselines):
        if name == "pixels":
            baseline, levels, cache = pixel_source_like(source, dataset), [0], None  # cheap: no cache
        else:
            if source.kind == "random-init":
                continue  # the source itself is the random-init row
            baseline, levels, cache = random_init_like(source, device), options.get("levels", "all"), cache_dir
        report["baselines"][name] = evaluate(baseline, dataset, cache_dir=cache, **{**options, "levels": levels})
    if out is not None:
        write_report(out, report)
    return report


def comparison_rows(report: dict[str, Any], source_label: str = "model") -> list[dict[str, Any]]:
    """The source's rows then each baseline's, the first column naming whose."""
    rows = [{"features": source_label, **row} for row in report_rows(report)]
    for name, baseline in report.get("baselines", {}).items():
        rows += [{"features": name, **row} for row in report_rows(baseline)]
    return rows
