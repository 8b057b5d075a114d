"""Model cards (``models/NAME.yaml``): official URL, sha256, format and licence, so ``--download`` can check a file.

Nothing is fetched without ``--download``; files land in ``$HJEPA_CACHE/models/NAME/``.
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
FIELDS = ("name", "url", "sha256", "size", "format", "architecture", "img_size", "mean", "std", "licence", "encoder")


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
    size: int | None = None  # bytes

    @property
    def filename(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]


def models_dir() -> Path:
    return Path(os.environ.get("HJEPA_MODELS_DIR", MODELS_DIR))


def card_names() -> list[str]:
    folder = models_dir()
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def is_plain_name(name: str) -> bool:
    """A file name in the cache, never a path."""
    return bool(name) and "/" not in name and "\\" not in name and not name.startswith(".") and "\0" not in name


def find_card(name: str) -> ModelCard | None:
    """``models/NAME.yaml``, or None."""
    if not is_plain_name(name):
        return None
    path = models_dir() / f"{name}.yaml"
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ImportSourceError(f"model card {path} is not readable UTF-8 YAML ({type(exc).__name__})") from None
    unknown = sorted(set(data) - set(FIELDS)) if isinstance(data, dict) else []
    if not isinstance(data, dict) or unknown or "url" not in data:
        raise ImportSourceError(f"model card {path} is malformed (unknown keys {unknown} or no url)")
    card_name = str(data.get("name", name))
    if not is_plain_name(card_name):  # it names the cache folder
        raise ImportSourceError(f"model card {path} has name {card_name!r}; a name has no '/', '\\' or leading '.'")
    if not str(data["url"]).startswith("https://"):
        raise ImportSourceError(f"model card {path} has url {data['url']!r}; only https:// URLs are fetched")
    try:
        return ModelCard(
            name=card_name, url=str(data["url"]), format=data["format"], architecture=data["architecture"],
            img_size=int(data["img_size"]), mean=tuple(data["mean"]), std=tuple(data["std"]),
            licence=data["licence"], sha256=data.get("sha256"), encoder=data.get("encoder", "target"),
            size=int(data["size"]) if data.get("size") is not None else None,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ImportSourceError(f"model card {path} is malformed ({type(exc).__name__}: {exc})") from None


def cache_path(card: ModelCard) -> Path:
    root = Path(os.environ.get("HJEPA_CACHE", Path.home() / ".cache" / "hjepa"))
    return root / "models" / card.name / card.filename


def no_download_message(card: ModelCard) -> str:
    return (f"{card.name} is not downloaded ({cache_path(card)} does not exist); nothing was fetched. Run "
            f"'hjepa-import {card.name} --download' to fetch {card.url} ({card.licence}), or download it yourself "
            "and pass the file")


def download(card: ModelCard, log: Log = print) -> Path:
    """Into the cache, atomically, checked against the card's sha256."""
    target = cache_path(card)
    if target.is_file():
        return target
    if not card.url.startswith("https://") or not is_plain_name(card.name):  # checked when read; again
        raise ImportSourceError(f"{card.name}: refusing to fetch {card.url!r} (only https:// URLs, plain names)")
    target.parent.mkdir(parents=True, exist_ok=True)
    log(f"downloading {card.url} -> {target}")
    digest = hashlib.sha256()
    try:
        with atomic_open(target, "wb") as tmp:
            with urllib.request.urlopen(card.url) as response:  # noqa: S310  (an https URL from a card)
                while chunk := response.read(1 << 20):
                    digest.update(chunk)
                    tmp.write(chunk)
            received = tmp.tell()
            if card.size is not None and received != card.size:
                raise ImportSourceError(f"{card.url}: received {received} bytes, the card says {card.size}; "
                                        "nothing kept")
            if card.sha256 and digest.hexdigest() != card.sha256:
                raise ImportSourceError(
                    f"{card.url}: sha256 {digest.hexdigest()} does not match the card's {card.sha256}")
    except OSError as exc:
        raise ImportSourceError(f"download of {card.url} failed: {exc}") from None
    return target
