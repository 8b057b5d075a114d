"""``evaluate``: k-NN and linear probes of a source's features per level, as one report: the pooled feature, or the
level-k grid's cells flattened (``feature="grid"``).

Features are cached by everything that changes them, so a rerun with other probe settings skips the encoder.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hjepa.config import EvalConfig
from hjepa.data import DataError, ImageDataset, build_dataset, iterate_eval
from hjepa.device import resolve_device
from hjepa.errors import OptionError
from hjepa.evaluation.linear_probe import ProbeOptions, linear_probe, logreg_probe
from hjepa.evaluation.report import build_report, check_report_path, write_report
from hjepa.evaluation.sources import EvalSource, resolve_source
from hjepa.inference.artifacts.levels import parse_levels
from hjepa.inference.features.cache import FeatureCache
from hjepa.inference.features.extract import extract_levels, spread_subset
from hjepa.inference.features.knn import knn_evaluate

PROTOCOLS = ("knn", "linear")
CLASSIFIERS = ("sgd", "logreg")
FEATURES = ("pooled", "grid")  # grid: the level-k cells in raster order, flattened ([N_k * D])
DEFAULT_CACHE_DIR = ".cache/features"
SPLITS = ("train", "test")


def load_split(
    dataset: str, split: str, data_dir: str | None, download: bool, limit: int | None
) -> tuple[ImageDataset, int]:
    """The split, or ``limit`` images spread over it (every class of a sorted folder stays), and its full size."""
    data = build_dataset(dataset, split, data_dir, download)
    full_size = len(data)
    if limit is not None:
        if limit <= 0:
            raise DataError(f"--{split}-limit must be positive, got {limit}")
        if limit < full_size:
            data = data.subset(spread_subset(limit, full_size))
    if len(data) == 0:
        raise DataError(f"{dataset} ({split}) holds no images")
    return data, full_size


@torch.no_grad()
def extract_pooled(
    source: EvalSource, data: ImageDataset, levels: Sequence[int], batch_size: int, progress: bool = True,
    desc: str = "", feature: str = "pooled",
) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """``{level: (features float32 [N, F], labels [N])}`` on the CPU from one streamed encoder pass: pooled
    (``F = D``) or the flattened grid (``feature="grid"``, ``F = N_k * D``)."""
    levels = list(levels)
    features, labels = extract_levels(lambda batch: source.embed_features(batch, levels, feature),
                                      iterate_eval(data, batch_size), source.transform(),
                                      math.ceil(len(data) / batch_size), progress, desc)
    return {k: (features.get(k, torch.empty(0)), labels) for k in levels}


def _cache_extra(
    source: EvalSource, data: ImageDataset, data_dir: str | None, full_size: int, limit: int | None,
    feature: str = "pooled",
) -> str:
    """The rest of the cache key, with a data fingerprint so data edited in place is re-encoded."""
    meta = source.runtime.metadata
    fields = {
        "data": data.fingerprint(),
        "img_size": meta.img_size,
        "mean": list(meta.mean),
        "std": list(meta.std),
        "precision": meta.precision,
        # the family only: torch features match across devices
        "backend": source.backend.split("[")[0],
        "data_dir": str(Path(data_dir).expanduser().resolve()) if data_dir else None,
        "full_size": full_size,
        "limit": limit,
    }
    if feature != "pooled":  # pooled keys stay as they were: caches written before still hit
        fields["feature"] = feature
    return json.dumps(fields, sort_keys=True)


def split_features(
    source: EvalSource,
    data: ImageDataset,
    dataset: str,
    split: str,
    levels: Sequence[int],
    cache: FeatureCache | None,
    extra: str,
    batch_size: int,
    progress: bool = True,
    feature: str = "pooled",
) -> dict[int, tuple[torch.Tensor, torch.Tensor, dict[str, Any]]]:
    """``{level: (features [N, F], labels [N], info)}``: cached levels loaded, the rest from one pass.

    ``info`` (cache hit / miss / off, seconds, file) goes in the report; a shared pass's time is split evenly.
    """
    out: dict[int, tuple[torch.Tensor, torch.Tensor, dict[str, Any]]] = {}
    keys = {level: cache.key(source.source_hash, level, dataset, split, extra) for level in levels} if cache else {}
    missing = []
    for level in levels:
        tic = time.perf_counter()
        cached = cache.load(keys[level]) if cache is not None else None
        if cached is None:
            missing.append(level)
            continue
        info = {"cache": "hit", "seconds": time.perf_counter() - tic, "file": str(cache.path(keys[level]))}
        out[level] = (*cached, info)
    if missing:
        tic = time.perf_counter()
        names = ",".join(str(level) for level in missing)
        computed = extract_pooled(source, data, missing, batch_size, progress, f"level {names} {split}", feature)
        seconds = (time.perf_counter() - tic) / len(missing)
        for level, (features, labels) in computed.items():
            file = None
            if cache is not None:
                file = str(cache.store(keys[level], features, labels))
            info = {"cache": "miss" if cache is not None else "off", "seconds": seconds, "file": file}
            out[level] = (features, labels, info)
    for features, _, info in out.values():
        info.update(count=int(features.shape[0]), dim=int(features.shape[1]))
    return {level: out[level] for level in levels}


@dataclass(frozen=True)
class EvalOptions:
    """``None`` takes :class:`EvalConfig`'s defaults, so rows of different models compare."""

    data_dir: str | None = None
    levels: str | int | Sequence[int] = "all"
    protocols: Sequence[str] = PROTOCOLS
    out: str | Path | None = None  # the JSON report
    cache_dir: str | Path | None = DEFAULT_CACHE_DIR
    ks: Sequence[int] | None = None
    temperature: float | None = None
    classifier: str = "sgd"  # or "logreg" (scikit-learn)
    feature: str = "pooled"  # or "grid": the level-k cells flattened
    train_limit: int | None = None
    test_limit: int | None = None
    batch_size: int | None = None
    probe_epochs: int | None = None
    download: bool = False
    random_init: str | None = None  # a config name: evaluate an untrained encoder
    backend: str = "auto"
    device: str = "auto"
    progress: bool = True

    def resolved(self) -> EvalOptions:
        """Defaults filled in, checked."""
        protocols = tuple(self.protocols)
        unknown = sorted(set(protocols) - set(PROTOCOLS))
        if unknown or not protocols:
            raise OptionError(f"unknown protocol {unknown[0] if unknown else None!r}; valid: {', '.join(PROTOCOLS)}")
        if self.classifier not in CLASSIFIERS:
            raise OptionError(f"unknown classifier {self.classifier!r}; valid: {', '.join(CLASSIFIERS)}")
        if self.feature not in FEATURES:
            raise OptionError(f"unknown feature {self.feature!r}; valid: {', '.join(FEATURES)}")
        settings = EvalConfig()
        ks = [int(k) for k in (settings.knn_k if self.ks is None else self.ks)]
        temperature = settings.knn_temperature if self.temperature is None else float(self.temperature)
        batch_size = settings.batch_size if self.batch_size is None else int(self.batch_size)
        probe_epochs = settings.probe_epochs if self.probe_epochs is None else int(self.probe_epochs)
        if not ks or batch_size <= 0 or probe_epochs <= 0 or min(ks) <= 0 or temperature <= 0:
            raise OptionError("batch size, probe epochs, every k and the temperature must be positive")
        return dataclasses.replace(self, protocols=protocols, ks=ks, temperature=temperature, batch_size=batch_size,
                                   probe_epochs=probe_epochs)


def eval_options(options: EvalOptions | None = None, **overrides: Any) -> EvalOptions:
    """``options`` with ``overrides``; an unknown name is an :class:`OptionError`."""
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(EvalOptions)})
    if unknown:
        raise OptionError(f"unknown evaluation option {unknown[0]!r}")
    return dataclasses.replace(options or EvalOptions(), **overrides)


def run_protocols(
    train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor], options: EvalOptions,
    num_classes: int, timings: dict[str, float],
) -> dict[str, Any]:
    """Every protocol on one level's ``(features [N, D], labels [N])``; adds to ``timings``."""
    results: dict[str, Any] = {}
    if "knn" in options.protocols:
        tic = time.perf_counter()
        results["knn"] = knn_evaluate(*train, *test, ks=options.ks, temperature=options.temperature,
                                      num_classes=num_classes)
        timings["knn_s"] += time.perf_counter() - tic
    if "linear" in options.protocols:
        tic = time.perf_counter()
        if options.classifier == "sgd":
            settings = EvalConfig()
            results["linear"] = linear_probe(*train, *test, ProbeOptions(
                num_classes=num_classes, lrs=settings.probe_lrs, epochs=options.probe_epochs,
                val_fraction=settings.probe_val_fraction, device=resolve_device("auto")))
        else:
            results["logreg"] = logreg_probe(*train, *test)
        timings["linear_s"] += time.perf_counter() - tic
    return results


def protocol_settings(options: EvalOptions, levels: list[int]) -> dict[str, Any]:
    """Recorded beside the figures."""
    protocol = {"protocols": list(options.protocols), "levels": levels, "feature": options.feature, "knn_k": options.ks,
                "knn_temperature": options.temperature, "classifier": options.classifier,
                "batch_size": options.batch_size}
    if "linear" in options.protocols and options.classifier == "sgd":
        settings = EvalConfig()
        protocol.update(probe_epochs=options.probe_epochs, probe_lrs=list(settings.probe_lrs),
                        probe_val_fraction=settings.probe_val_fraction)
    return protocol


def evaluate(
    source: str | Path | EvalSource | None, dataset: str, options: EvalOptions | None = None, **overrides: Any
) -> dict[str, Any]:
    """The report of ``source`` on ``dataset``, also written to ``out``: ``evaluate(path, "digits", ks=[5])``."""
    started = time.perf_counter()
    o = eval_options(options, **overrides).resolved()
    if o.out is not None:
        check_report_path(o.out)  # fail before the features, not after
    timings: dict[str, float] = {}

    # Step 1. The model and its levels: a bad path fails before any data is read
    tic = time.perf_counter()
    if not isinstance(source, EvalSource):
        source = resolve_source(source, random_init=o.random_init, backend=o.backend, device=o.device)
    chosen_levels = parse_levels(o.levels, source.levels, source.name)
    timings["load_s"] = time.perf_counter() - tic

    # Step 2. The data: uint8, preprocessed later by the source's own transform
    tic = time.perf_counter()
    limits = {"train": o.train_limit, "test": o.test_limit}
    splits = {split: load_split(dataset, split, o.data_dir, o.download, limits[split]) for split in SPLITS}
    num_classes = splits["train"][0].num_classes
    timings["data_s"] = time.perf_counter() - tic

    # Step 3. Features of both splits (cached, or one pass for all levels), then each protocol
    cache = FeatureCache(o.cache_dir) if o.cache_dir is not None else None
    timings.update(extract_s=0.0, knn_s=0.0, linear_s=0.0)
    extras = {split: _cache_extra(source, data, o.data_dir, full_size, limits[split], o.feature)
              if cache is not None else ""
              for split, (data, full_size) in splits.items()}  # once: it reads every pixel
    per_split = {split: split_features(source, data, dataset, split, chosen_levels, cache, extras[split],
                                       o.batch_size, o.progress, o.feature)
                 for split, (data, _) in splits.items()}
    feature_info: dict[int, dict[str, dict[str, Any]]] = {}
    results: dict[int, dict[str, Any]] = {}
    for level in chosen_levels:
        feature_info[level] = {split: per_split[split][level][2] for split in splits}
        timings["extract_s"] += sum(info["seconds"] for info in feature_info[level].values())
        train, test = (per_split[split][level][:2] for split in SPLITS)
        results[level] = run_protocols(train, test, o, num_classes, timings)
    timings["total_s"] = time.perf_counter() - started

    # Step 4. The report
    report = build_report(
        source.name,
        dataset,
        {split: len(data) for split, (data, _) in splits.items()},
        results,
        timings,
        **source.describe(),
        dataset_sizes={split: full_size for split, (_, full_size) in splits.items()},
        limits=limits,
        num_classes=num_classes,
        protocol=protocol_settings(o, chosen_levels),
        features=feature_info,
    )
    if o.out is not None:
        write_report(o.out, report)
    return report
