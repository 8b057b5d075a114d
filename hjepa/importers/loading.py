"""Reading a source safely (safetensors or ``weights_only``), with any Hugging Face configs beside it."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from hjepa.importers.base import LoadedSource
from hjepa.importers.errors import ImportSourceError
from hjepa.inference.artifacts.hashing import file_sha256

HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


def weights_file(path: Path) -> Path:
    """A Hugging Face directory means its weights file."""
    if path.is_dir():
        for name in HF_WEIGHTS:
            if (path / name).is_file():
                return path / name
        raise ImportSourceError(f"directory {path} holds no {' or '.join(HF_WEIGHTS)}")
    if not path.is_file():
        raise ImportSourceError(f"{path} does not exist (expected a checkpoint file, a Hugging Face model directory "
                                "or a known model name, see models/)")
    return path


def _json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ImportSourceError(f"{path} is not UTF-8 text; a config file must be UTF-8 JSON") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ImportSourceError(_one_line(f"{path} is not readable JSON ({exc})")) from None
    return data if isinstance(data, dict) else {}


def _one_line(text: str) -> str:
    return " ".join(text.split())[:300].rstrip()


def read_tensors(file: Path) -> Any:
    """The file's contents, without unpickling arbitrary objects."""
    if file.suffix == ".safetensors":
        try:
            return load_file(str(file))
        except Exception as exc:  # safetensors has its own error types
            reason = f"{type(exc).__name__}: {exc}"
            raise ImportSourceError(_one_line(f"{file} is unreadable or corrupt ({reason})")) from None
    try:
        return _torch_load(file)
    except pickle.UnpicklingError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ImportSourceError(_one_line(f"{file} holds objects that are not safe to load: {reason}")) from None
    except Exception as exc:  # damaged files raise many types
        raise ImportSourceError(_one_line(f"{file} is unreadable or corrupt ({type(exc).__name__}: {exc})")) from None


def _torch_load(file: Path) -> Any:
    """Memory-mapped, so a 10 GB file with optimizer state costs the encoder's bytes; legacy files read whole."""
    try:
        return torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as exc:
        if "mmap" not in str(exc) and "zip" not in str(exc):
            raise
    return torch.load(file, map_location="cpu", weights_only=True)


def load_source(path: str | Path) -> LoadedSource:
    """A file or Hugging Face directory, read safely."""
    file = weights_file(Path(path).expanduser())
    state = read_tensors(file)
    return LoadedSource(
        path=file, state=state, sha256=file_sha256(file), config=_json(file.parent / "config.json"),
        preprocessor=_json(file.parent / "preprocessor_config.json"),
    )
