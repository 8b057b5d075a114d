"""Model cards: one small YAML file per known pretrained source in ``models/`` (repo top level).

A card names the official URL (and sha256 when published), the source format, architecture, image size, mean /
std and licence, so ``hjepa-import NAME --download`` can fetch and check the file. Nothing is fetched without
``--download``; files land in ``$HJEPA_CACHE`` (default ``~/.cache/hjepa``) ``/models/NAME/``.
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from hjepa.files import atomic_open
from hjepa.importers.errors import ImportSourceError
from hjepa.logs import Log

MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
FIELDS = ("name", "url", "sha256", "format", "architecture", "img_size", "mean", "std", "licence", "encoder")


@dataclass(frozen=True)
class ModelCard:
    name: str
    url: str
    format: str
    architecture: str
    img_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    licence: str
    sha256: str | None = None
    encoder: str = "target"

    @property
    def filename(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]


def models_dir() -> Path:
    return Path(os.environ.get("HJEPA_MODELS_DIR", MODELS_DIR))


def card_names() -> list[str]:
    folder = models_dir()
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def find_card(name: str) -> ModelCard | None:
    """The card ``models/NAME.yaml``, or None when there is none."""
    if "/" in name or "\\" in name or name.startswith("."):
        return None
    path = models_dir() / f"{name}.yaml"
    if not path.is_file():
        return None
    data = yaml.safe_load(path.read_text()) or {}
    unknown = sorted(set(data) - set(FIELDS))
    if unknown or "url" not in data:
        raise ImportSourceError(f"model card {path} is malformed (unknown keys {unknown} or no url)")
    return ModelCard(
        name=data.get("name", name), url=data["url"], format=data["format"], architecture=data["architecture"],
        img_size=int(data["img_size"]), mean=tuple(data["mean"]), std=tuple(data["std"]), licence=data["licence"],
        sha256=data.get("sha256"), encoder=data.get("encoder", "target"),
    )


def cache_path(card: ModelCard) -> Path:
    root = Path(os.environ.get("HJEPA_CACHE", Path.home() / ".cache" / "hjepa"))
    return root / "models" / card.name / card.filename


def no_download_message(card: ModelCard) -> str:
    return (f"{card.name} is not downloaded ({cache_path(card)} does not exist); nothing was fetched. Run "
            f"'hjepa-import {card.name} --download' to fetch {card.url} ({card.licence}), or download it yourself "
            "and pass the file")


def download(card: ModelCard, log: Log = print) -> Path:
    """Fetch the card's file into the cache (atomically) and check its sha256 when the card has one."""
    target = cache_path(card)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    log(f"downloading {card.url} -> {target}")
    digest = hashlib.sha256()
    try:
        with atomic_open(target, "wb") as tmp:
            with urllib.request.urlopen(card.url) as response:  # noqa: S310  (an https URL from a card)
                while chunk := response.read(1 << 20):
                    digest.update(chunk)
                    tmp.write(chunk)
            if card.sha256 and digest.hexdigest() != card.sha256:
                raise ImportSourceError(
                    f"{card.url}: sha256 {digest.hexdigest()} does not match the card's {card.sha256}")
    except OSError as exc:
        raise ImportSourceError(f"download of {card.url} failed: {exc}") from None
    return target
