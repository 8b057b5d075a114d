"""``embed_collection(options)``: the coordinator of ``hjepa-embed``, in named steps."""

from __future__ import annotations

import importlib.util
import json
import shutil
import time
from pathlib import Path
from typing import Any

from hjepa.embed.inputs import Listing, describe_input, list_input, load_listing, save_listing
from hjepa.embed.manifest import new_manifest, prepare_output, write_manifest
from hjepa.embed.options import EmbedJob, EmbedOptions
from hjepa.embed.preprocess import Preprocessing
from hjepa.embed.shards import ShardPlan, finished_shards
from hjepa.errors import OptionError
from hjepa.files import atomic_write_text, remove_stale_temp_files
from hjepa.inference import Runtime, file_sha256, open_runtime, source_kind
from hjepa.inference.artifacts.levels import parse_levels
from hjepa.inference.features.collection import ERRORS_NAME


def open_source(source: str, backend: str = "auto", device: str = "auto") -> tuple[Runtime, str, str]:
    """SOURCE as hjepa-eval takes it -> (runtime, kind, weights hash as hjepa-eval keys it)."""
    path = Path(source).expanduser()
    kind = source_kind(path)
    runtime = open_runtime(path, backend=backend, device=device)
    digest = file_sha256(path) if kind in ("onnx", "engine") else runtime.identity
    return runtime, kind, digest


def embed_collection(options: EmbedOptions) -> dict[str, Any]:
    """Runs the job to completion, resuming what a previous run finished; returns its summary."""
    options.check()
    _check_extras(options)
    started = time.perf_counter()
    # Step 1. Open the model
    runtime, kind, digest = open_source(options.source, options.backend, options.device)
    levels = parse_levels(options.levels, runtime.levels, options.source)
    preprocessing = Preprocessing.for_model(runtime.metadata, options.max_pixels)
    # Step 2. Fix the listing; check --out (resume, overwrite or refuse)
    directory = Path(options.out).expanduser()
    spec = {"source_hash": digest, "input": describe_input(options.input, options.split), "levels": levels,
            "grid": options.grid, "shard_size": options.shard_size, "preprocessing": preprocessing.to_dict()}
    previous = prepare_output(directory, spec, options.resume, options.overwrite)
    listing = _listing(options, directory, previous)
    job = _job(options, directory, listing, runtime, levels, preprocessing)
    if previous is None:
        save_listing(listing, directory)
        model = {"source": str(Path(options.source).expanduser().resolve()), "kind": kind, "hash": digest,
                 "identity": runtime.identity, "backend": runtime.backend, "metadata": runtime.metadata.to_dict()}
        manifest = new_manifest(spec | {"count": len(listing), "listing": listing.spec()}, model)
        write_manifest(directory, manifest)
    else:
        manifest = previous
    # Step 3. Run the shards not on disk yet
    remove_stale_temp_files(directory, ["part-*.parquet", "manifest.json", "errors.jsonl"])
    for stale in directory.glob(".ray-*.partial"):  # Ray rounds killed before their rename
        shutil.rmtree(stale, ignore_errors=True)
    done = finished_shards(directory)
    pending = job.plan.pending(set(done))
    _run_engine(job, runtime, pending, lambda record: done.__setitem__(record["index"], record))
    # Step 4. errors.jsonl and the finished manifest
    summary = _finish(job, manifest, done, runtime, resumed=previous is not None, pending=len(pending))
    # Step 5. The search index
    if options.index:
        from hjepa.embed.index import build_indexes

        summary["index"] = manifest["index"] = build_indexes(directory, levels, options.exact_index_max_rows)
        write_manifest(directory, manifest)
    summary["seconds"] = round(time.perf_counter() - started, 3)
    return summary


def _check_extras(options: EmbedOptions) -> None:
    """Say now, not hours in, that a package is missing."""
    needed = [("faiss", "--index")] if options.index else []
    needed += [("ray", "--engine ray")] if options.engine == "ray" else []
    for module, option in needed:
        if importlib.util.find_spec(module) is None:
            raise OptionError(f"{option} needs the {module} package: pip install 'hjepa[scale]'")


def _listing(options: EmbedOptions, directory: Path, previous: dict | None) -> Listing:
    if previous is not None:  # files added since must not shift shards
        return load_listing(directory, previous["job"]["listing"], options.data_dir)
    return list_input(options.input, options.split, options.data_dir)


def _job(options: EmbedOptions, directory: Path, listing: Listing, runtime: Runtime, levels: list[int],
         preprocessing: Preprocessing) -> EmbedJob:
    meta = runtime.metadata
    dims = {level: int(meta.embed_dims[level]) for level in levels}
    grid_sizes = None
    if options.grid:
        grid_sizes = {level: int(meta.grids[level][0] * meta.grids[level][1] * dims[level]) for level in levels}
    dataset = None
    if listing.kind == "dataset" and options.engine == "local":
        from hjepa.data import build_dataset

        dataset = build_dataset(listing.dataset, listing.split, options.data_dir, download=False)
    return EmbedJob(directory, listing, ShardPlan(len(listing), options.shard_size), levels, options.grid,
                    preprocessing, dims, grid_sizes, options, dataset)


def _run_engine(job: EmbedJob, runtime: Runtime, pending: list[int], on_shard: Any) -> None:
    if job.options.engine == "ray":
        from hjepa.embed.ray_engine import run_ray

        run_ray(job, pending, on_shard)
    else:
        from hjepa.embed.local import run_local

        run_local(job, runtime, pending, on_shard)


def _finish(job: EmbedJob, manifest: dict, done: dict[int, dict], runtime: Runtime, resumed: bool,
            pending: int) -> dict[str, Any]:
    """``errors.jsonl`` in listing order, the finished manifest; returns the summary."""
    records = [done[index] for index in sorted(done)]
    skipped = [entry for record in records for entry in record["skipped"]]
    text = "".join(json.dumps(entry) + "\n" for entry in skipped)
    atomic_write_text(job.directory / ERRORS_NAME, text)
    rows = sum(record["rows"] for record in records)
    reasons: dict[str, int] = {}
    for entry in skipped:
        reasons[entry["reason"]] = reasons.get(entry["reason"], 0) + 1
    manifest.update(
        status="complete", rows=rows, preprocessing=job.preprocessing.to_dict(), skipped=len(skipped),
        skipped_by_reason=reasons, inputs=len(job.listing),
        levels=job.levels, dims={str(k): v for k, v in job.dims.items()}, grid=job.grid,
        grids={str(k): list(runtime.metadata.grids[k]) for k in job.levels}, shards=len(records),
        duplicates_dropped=job.listing.duplicates, columns=_columns(job),
    )
    write_manifest(job.directory, manifest)
    return {"out": str(job.directory), "inputs": len(job.listing), "rows": rows, "skipped": len(skipped),
            "skipped_by_reason": reasons, "shards": len(records), "shards_run": pending, "resumed": resumed,
            "engine": job.options.engine, "backend": runtime.backend, "levels": job.levels}


def _columns(job: EmbedJob) -> list[str]:
    from hjepa.inference.features.collection import grid_column, level_column

    names = ["id"] + [level_column(level) for level in job.levels]
    return names + ([grid_column(level) for level in job.levels] if job.grid else [])
