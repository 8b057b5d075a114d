"""``import_encoder``: a foreign checkpoint -> an encoder artifact, written only once it provably reproduces the
source; cheap checks come first, so a mistake costs nothing.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

import hjepa
from hjepa.errors import stage
from hjepa.files import staged_directory
from hjepa.importers import hf_ijepa, hjepa_seed, ijepa, timm_vit  # noqa: F401  (they register)
from hjepa.importers.base import ENCODERS, IMPORTERS, Conversion, ImportOptions, LoadedSource
from hjepa.importers.cards import ModelCard, cache_path, card_names, download, find_card, no_download_message
from hjepa.importers.errors import ImportSourceError
from hjepa.importers.loading import load_source
from hjepa.importers.parity import TOLERANCE, check_parity, measure_parity
from hjepa.inference.artifacts.artifact import ARTIFACT_FORMAT, SPEC_NAME, WEIGHTS_NAME, LoadedModel, write_artifact
from hjepa.inference.artifacts.checkpoint import CheckpointError, check_state
from hjepa.logs import Log, silent
from hjepa.models.pretrained import HEADS, EncoderArchitecture, PretrainedEncoder

FORMATS = ("auto", *IMPORTERS.names())
MAX_LEVELS = 4
ARTIFACT_FILES = (SPEC_NAME, WEIGHTS_NAME)  # all that --overwrite may replace
RECIPE = ("level k: the imported encoder's output patch tokens, averaged over 2^k x 2^k cells, through the level "
          "head ({head}); pooled = mean over the level-k grid")


def max_levels(grid: tuple[int, int]) -> int:
    """The most L with 2^(L-1) dividing both sides, up to ``MAX_LEVELS``."""
    levels = 1
    while levels < MAX_LEVELS and grid[0] % 2**levels == 0 and grid[1] % 2**levels == 0:
        levels += 1
    return levels


def resolve_source(source: str | Path, download_card: bool, log: Log) -> tuple[Path, ModelCard | None]:
    """A path, or a model card name (fetched only with ``download_card``)."""
    path = Path(source).expanduser()
    if path.exists():
        return path, None
    card = find_card(str(source))
    if card is None:
        known = ", ".join(card_names()) or "none"
        raise ImportSourceError(f"{source} is neither a file / directory nor a known model name (known: {known})")
    if cache_path(card).is_file():
        return cache_path(card), card
    if not download_card:
        raise ImportSourceError(no_download_message(card))
    return download(card, log), card


def pick_importer(source: LoadedSource, name: str) -> Any:
    if name != "auto":
        importer = IMPORTERS.build(name)
        if not importer.matches(source):
            raise ImportSourceError(f"{source.path.name} is not in the {name!r} layout ({_describe(source)}; known "
                                    f"layouts: {', '.join(IMPORTERS.names())})")
        return importer
    for candidate in IMPORTERS.names():
        importer = IMPORTERS.build(candidate)
        if importer.matches(source):
            return importer
    raise ImportSourceError(f"{source.path.name}: unknown layout ({_describe(source)}); known layouts: "
                            f"{', '.join(IMPORTERS.names())} (--from NAME)")


def _describe(source: LoadedSource) -> str:
    state = source.state
    if not isinstance(state, dict):
        return f"a {type(state).__name__}, not a dict"
    keys = [str(k) for k in state]
    return f"{len(keys)} top-level keys: {', '.join(keys[:10])}{' ...' if len(keys) > 10 else ''}"


def build_spec(
    conversion: Conversion, arch: EncoderArchitecture, source: LoadedSource, card: ModelCard | None,
    mean: tuple[float, ...], std: tuple[float, ...], parity: dict[str, Any],
) -> dict[str, Any]:
    licence = card.licence if card is not None else conversion.licence
    return {
        "format": ARTIFACT_FORMAT,
        "architecture": arch.to_dict(),
        "preprocessing": {"img_size": arch.img_size, "mean": list(mean), "std": list(std)},
        "feature": {"recipe": RECIPE.format(head=arch.head), "levels": list(range(arch.num_levels)),
                    "level_head": arch.head, "level0": conversion.provenance.get("level0")},
        "provenance": {
            "source": str(source.path),
            "source_sha256": source.sha256,
            "source_format": conversion.provenance.get("format"),
            "model_name": card.name if card is not None else None,
            "url": card.url if card is not None else None,
            "encoder": conversion.provenance.get("encoder"),
            "epoch": conversion.provenance.get("epoch"),
            "not_imported": conversion.provenance.get("not_imported", []),
            "config_name": card.name if card is not None else source.path.stem,
            "licence": licence,
            "hjepa_version": hjepa.__version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
        "parity": {"reference": "hjepa.importers.reference (independent float64 forward on the raw source tensors)",
                   "tolerance": TOLERANCE, **parity},
        "config": None,
    }


def import_encoder(
    source: str | Path,
    out: str | Path | None = None,
    options: ImportOptions | None = None,
    source_format: str = "auto",
    overwrite: bool = False,
    download_card: bool = False,
    log: Log | None = None,
) -> dict[str, Any]:
    """``source`` into the artifact ``out`` (default ``imports/<name>``); returns its spec."""
    options = options or ImportOptions()
    log = log or silent
    if options.encoder not in ENCODERS:
        raise ImportSourceError(f"--encoder must be one of {', '.join(ENCODERS)}, got {options.encoder!r}")
    if options.head not in HEADS:
        raise ImportSourceError(f"--head must be one of {', '.join(HEADS)}, got {options.head!r}")
    if source_format not in FORMATS:
        raise ImportSourceError(f"unknown --from {source_format!r}; valid: {', '.join(FORMATS)}")
    name = Path(str(source)).name.split(".")[0] or "imported"
    target = Path(out) if out is not None else Path("imports") / f"{name}-{options.encoder}"
    if target.exists() and not overwrite:
        raise ImportSourceError(f"{target} exists; pass --overwrite to replace it or --out elsewhere")
    if target.exists():
        check_replaceable(target)

    # Step 1. Read the source safely and convert it, every tensor once
    path, card = resolve_source(source, download_card, log)
    if card is not None:
        source_format = card.format if source_format == "auto" else source_format
        options.arch = options.arch or card.architecture
        options.encoder = card.encoder if options.encoder == "target" else options.encoder
    with stage("reading the source", ImportSourceError):
        loaded = load_source(path)
    importer = pick_importer(loaded, source_format)
    log(f"{loaded.path.name}: {importer.name} layout, {options.encoder} encoder")
    with stage(f"converting the {importer.name} weights", ImportSourceError):
        conversion = importer.convert(loaded, options)

    # Step 2. Levels, and hjepa's model with the converted weights (strict)
    grid = conversion.architecture.grid
    deepest = max_levels(grid)
    levels = options.levels or deepest
    if not 1 <= levels <= deepest:
        raise ImportSourceError(f"--levels {levels}: the {grid[0]}x{grid[1]} patch grid allows 1..{deepest} levels "
                                f"(level k pools 2^k x 2^k cells)")
    arch = dataclasses.replace(conversion.architecture, num_levels=levels, head=options.head)
    with stage("building the encoder", ImportSourceError), torch.device("meta"):
        model = PretrainedEncoder(arch, name)  # no random init: assigned below
    encoder_state = {f"target_encoder.{k}": v for k, v in conversion.weights.items()}
    try:
        check_state(dict(model.state_dict()), encoder_state, source=str(loaded.path))
    except CheckpointError as exc:  # a converter bug
        raise ImportSourceError(str(exc)) from None
    model.load_state_dict(encoder_state, assign=True)  # no second copy
    for name, buffer in model.named_buffers():  # computed ones, e.g. a sin-cos table
        if buffer.is_meta:
            raise ImportSourceError(f"{name} is neither in the source nor computable here (a converter bug)")

    # Step 3. Parity against the independent reference, then write
    with stage("the parity check", ImportSourceError):
        parity = measure_parity(model, conversion)
    check_parity(parity)
    worst = max(row["max_abs_diff"] for batch in parity.values() for row in batch.values())
    log(f"parity with the reference forward: max abs diff {worst:.3g} over batch 1 and 4, levels 0..{levels - 1}")
    mean = options.mean or (card.mean if card is not None else conversion.mean)
    std = options.std or (card.std if card is not None else conversion.std)
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ImportSourceError(f"--mean / --std need 3 values each, std > 0; got {mean} {std}")
    spec = build_spec(conversion, arch, loaded, card, tuple(mean), tuple(std), parity)
    if target.exists():
        check_replaceable(target)  # again: it may have changed meanwhile
    with stage(f"writing {target}", ImportSourceError), staged_directory(target) as staged:
        write_artifact(LoadedModel(model, model.config, spec, loaded.sha256), staged)
    log(f"encoder artifact written to {target} (licence: {spec['provenance']['licence'] or 'unknown'})")
    return spec


def check_replaceable(target: Path) -> None:
    """``--overwrite`` replaces an artifact's own files, never a folder with anything else."""
    if not target.is_dir() or not (target / SPEC_NAME).is_file():
        raise ImportSourceError(f"{target} exists and is not an encoder artifact; refusing to replace it")
    others = sorted(p.name for p in target.iterdir() if p.name not in ARTIFACT_FILES)
    if others:
        more = f" (+{len(others) - 1} more)" if len(others) > 1 else ""
        raise ImportSourceError(f"{target} holds {others[0]!r}{more}, which is not part of an encoder artifact; "
                                "refusing to replace the folder (move it, or --out elsewhere)")
