"""``OnnxRuntime``: exported levels on onnxruntime's best provider here (TensorRT, CUDA, then CPU).

An export folder opens one session per level, or one for all when it holds ``levels.onnx`` (a ViT-H level is a
2.5 GB session; that graph answers every level from one encoder pass).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from hjepa.inference.artifacts.hashing import file_sha256
from hjepa.inference.artifacts.metadata import (
    Manifest,
    RuntimeSourceError,
    decode_props,
    metadata_from_levels,
    read_manifest,
)
from hjepa.inference.runtimes.runtime import RUNTIMES, Runtime
from hjepa.inference.runtimes.sessions import INPUT_NAME, OUTPUT_NAMES, choose_providers, ort_session


def _file_digest(paths: list[Path]) -> str:
    return hashlib.sha256("".join(file_sha256(path) for path in paths).encode()).hexdigest()


def _load(path: Path, providers: list[str]) -> Any:
    try:
        return ort_session(path, providers)
    except Exception as exc:  # onnxruntime raises its own InvalidProtobuf / Fail / NoSuchFile types
        raise RuntimeSourceError(f"{path} is not a loadable ONNX model ({type(exc).__name__}: {exc})"[:400]) from None


def level_outputs(level: int) -> tuple[str, str]:
    """The output names of ``level`` in the one-graph ``levels.onnx``."""
    return f"tokens_{level}", f"pooled_{level}"


@RUNTIMES.register("onnxruntime")
class OnnxRuntime(Runtime):
    """One onnxruntime ``InferenceSession`` per served level (outputs ``tokens`` and ``pooled``), or one shared by
    every level when ``outputs`` names each level's outputs in one graph; input ``images``."""

    def __init__(
        self,
        files: dict[int | None, Path],
        providers: list[str],
        per_level_metadata: dict[int, dict[str, Any]] | None = None,
        config: dict[str, Any] | None = None,
        source: str | None = None,
        outputs: dict[int, tuple[str, str]] | None = None,
    ) -> None:
        super().__init__()
        self.sessions: dict[int, Any] = {}
        self.outputs: dict[int, tuple[str, str]] = {}
        read_metadata: dict[int, dict[str, Any]] = {}
        opened: dict[Path, Any] = {}  # a file shared by several levels is opened once
        for level, path in files.items():
            session = opened[path] = opened.get(path) or _load(path, providers)
            if outputs:  # the graph's own metadata describes its first level only: the manifest's, per level
                props = dict((per_level_metadata or {})[level])
            else:
                props = decode_props(dict(session.get_modelmeta().custom_metadata_map))
            if level is None:  # a lone .onnx file says which level it holds
                try:
                    level = int(props["level"])
                except (KeyError, TypeError, ValueError):
                    message = f"{path} has no integer 'level' metadata; was it written by hjepa-export?"
                    raise RuntimeSourceError(message) from None
            if per_level_metadata and level in per_level_metadata:
                props = {**per_level_metadata[level], **props}  # the file's own metadata wins over the manifest
            read_metadata[level] = props
            self.outputs[level] = outputs[level] if outputs else OUTPUT_NAMES
            self._check_io(session, path, self.outputs[level])
            self._check_input_shape(session, path, props)
            self.sessions[level] = session
        paths = list(opened)
        self.source = source or str(paths[0])
        self.metadata = metadata_from_levels(read_metadata, self.source)
        self.config = _config_or_none(config)
        self.identity = _file_digest(paths)
        first = next(iter(self.sessions.values()))
        self.backend = f"onnxruntime[{first.get_providers()[0]}]"
        batch_dim = first.get_inputs()[0].shape[0]
        # A static batch (exported with --batch N and no --dynamic) is padded up to N and run N at a time.
        self.fixed_batch = batch_dim if isinstance(batch_dim, int) and batch_dim > 0 else None
        self.max_batch = self.fixed_batch or 64
        self.uint8_input = first.get_inputs()[0].type == "tensor(uint8)"

    @staticmethod
    def _check_io(session: Any, path: Path, names: tuple[str, str] = OUTPUT_NAMES) -> None:
        inputs = [arg.name for arg in session.get_inputs()]
        outputs = [arg.name for arg in session.get_outputs()]
        if inputs != [INPUT_NAME] or not set(names) <= set(outputs):
            raise RuntimeSourceError(
                f"{path} has inputs {inputs} and outputs {outputs}; an hjepa export has input '{INPUT_NAME}' and "
                f"outputs {list(names)}"
            )

    @staticmethod
    def _check_input_shape(session: Any, path: Path, props: dict[str, Any]) -> None:
        """The graph must take the images its metadata describes: every later call would otherwise fail inside
        onnxruntime with its own long message (a file edited after export, or metadata copied from another)."""
        size, input_format = props.get("img_size"), props.get("input_format", "float_nchw")
        if not isinstance(size, int) or input_format not in ("float_nchw", "uint8_nhwc"):
            return  # missing or malformed metadata is reported, with the key, by metadata_from_levels
        arg = session.get_inputs()[0]
        uint8 = input_format == "uint8_nhwc"
        expected = ["batch", size, size, 3] if uint8 else ["batch", 3, size, size]
        dims_agree = len(arg.shape) == 4 and all(
            not isinstance(have, int) or have == want for have, want in zip(arg.shape[1:], expected[1:], strict=True)
        )
        if not dims_agree or (arg.type == "tensor(uint8)") != uint8:
            shown = "[" + ", ".join(str(d) for d in arg.shape) + "]"
            raise RuntimeSourceError(
                f"{path}: its graph takes {arg.type} images of shape {shown}, but its metadata says {size} px "
                f"{input_format} ([{', '.join(str(d) for d in expected)}]); the file was changed after export: "
                "export it again with hjepa-export"
            )

    @classmethod
    def open(cls, path: Path, provider: str | None = None, device: str = "auto") -> OnnxRuntime:
        """An ``.onnx`` file (one level) or an export directory (every level with an ``.onnx`` file; one session
        for all of them when it holds ``levels.onnx``)."""
        import onnxruntime as ort

        providers = choose_providers(provider, device, list(ort.get_available_providers()))
        if not path.is_dir():
            return cls({None: path}, providers, source=str(path))
        manifest = read_manifest(path)
        files = {k: entry["onnx"] for k, entry in manifest.files.items() if entry["onnx"] is not None}
        if not files:
            raise RuntimeSourceError(f"{path}/manifest.json lists no .onnx files")
        for file in files.values():
            if not file.is_file():
                raise RuntimeSourceError(f"{file} is listed in {path}/manifest.json but does not exist")
        shared = one_graph(manifest, list(files))
        if shared is not None:
            return cls(dict.fromkeys(files, shared), providers, manifest.metadata, manifest.config, source=str(path),
                       outputs={k: level_outputs(k) for k in files})
        return cls(files, providers, manifest.metadata, manifest.config, source=str(path))

    def _run(self, session: Any, batch: np.ndarray, names: list[str]) -> list[np.ndarray]:
        count = batch.shape[0]
        if self.fixed_batch is not None and count < self.fixed_batch:
            padding = np.zeros((self.fixed_batch - count, *batch.shape[1:]), batch.dtype)
            batch = np.concatenate([batch, padding])
        feed = self.to_pixels(batch) if self.uint8_input else batch
        return [out[:count] for out in session.run(names, {INPUT_NAME: feed})]

    def _forward(self, batch: np.ndarray, level: int) -> tuple[np.ndarray, np.ndarray]:
        tokens, pooled = self._run(self.sessions[level], batch, list(self.outputs[level]))
        return tokens, pooled

    def _forward_levels(
        self, batch: np.ndarray, levels: list[int], with_tokens: bool
    ) -> dict[int, tuple[np.ndarray | None, np.ndarray]]:
        """One run per session: the levels of ``levels.onnx`` come from one encoder pass."""
        out: dict[int, tuple[np.ndarray | None, np.ndarray]] = {}
        for session in {id(self.sessions[k]): self.sessions[k] for k in levels}.values():
            group = [k for k in levels if self.sessions[k] is session]
            names = [name for k in group for name in (self.outputs[k] if with_tokens else self.outputs[k][1:])]
            values = iter(self._run(session, batch, names))
            for k in group:
                tokens = next(values) if with_tokens else None
                out[k] = (tokens, next(values))
        return out


def one_graph(manifest: Manifest, levels: list[int]) -> Path | None:
    """``levels.onnx`` when the manifest lists it with every level in ``levels`` at the per-level files' precision
    (fp32, the only one it is written in); else None, and the per-level files are read."""
    entry = manifest.all_levels
    if not entry or not isinstance(entry.get("onnx"), str) or not set(levels) <= set(entry.get("levels") or []):
        return None
    path = manifest.directory / entry["onnx"]
    same = all(manifest.metadata.get(k, {}).get("precision", "fp32") == "fp32" for k in levels)
    return path if same and path.is_file() else None


def _config_or_none(config: dict[str, Any] | None) -> Any:
    """The manifest's resolved config as a ``Config`` (used for mask settings); None when absent or unreadable."""
    if not config:
        return None
    from hjepa.config import Config, ConfigError

    try:
        return Config.from_dict(config)
    except (ConfigError, TypeError, ValueError):
        return None
