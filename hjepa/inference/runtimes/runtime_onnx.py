"""``OnnxRuntime``: exported levels on onnxruntime's best provider here (TensorRT, CUDA, then CPU)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from hjepa.inference.artifacts.hashing import file_sha256
from hjepa.inference.artifacts.metadata import (
    RuntimeSourceError,
    decode_props,
    metadata_from_levels,
    read_manifest,
)
from hjepa.inference.runtimes.runtime import RUNTIMES, Runtime
from hjepa.inference.runtimes.sessions import INPUT_NAME, OUTPUT_NAMES, choose_providers, ort_session


def _file_digest(paths: list[Path]) -> str:
    return hashlib.sha256("".join(file_sha256(path) for path in paths).encode()).hexdigest()


@RUNTIMES.register("onnxruntime")
class OnnxRuntime(Runtime):
    """One ``InferenceSession`` per level: ``images`` -> ``tokens``, ``pooled``."""

    def __init__(
        self,
        files: dict[int | None, Path],
        providers: list[str],
        per_level_metadata: dict[int, dict[str, Any]] | None = None,
        config: dict[str, Any] | None = None,
        source: str | None = None,
    ) -> None:
        super().__init__()
        self.sessions: dict[int, Any] = {}
        read_metadata: dict[int, dict[str, Any]] = {}
        paths: list[Path] = []
        for level, path in files.items():
            try:
                session = ort_session(path, providers)
            except Exception as exc:  # onnxruntime has its own error types
                message = f"{path} is not a loadable ONNX model ({type(exc).__name__}: {exc})"
                raise RuntimeSourceError(message[:400]) from None
            props = decode_props(dict(session.get_modelmeta().custom_metadata_map))
            if level is None:  # a lone .onnx file says its level
                try:
                    level = int(props["level"])
                except (KeyError, TypeError, ValueError):
                    message = f"{path} has no integer 'level' metadata; was it written by hjepa-export?"
                    raise RuntimeSourceError(message) from None
            if per_level_metadata and level in per_level_metadata:
                props = {**per_level_metadata[level], **props}  # the file wins over the manifest
            read_metadata[level] = props
            self._check_io(session, path)
            self._check_input_shape(session, path, props)
            self.sessions[level] = session
            paths.append(path)
        self.source = source or str(paths[0])
        self.metadata = metadata_from_levels(read_metadata, self.source)
        self.config = _config_or_none(config)
        self.identity = _file_digest(paths)
        first = next(iter(self.sessions.values()))
        self.backend = f"onnxruntime[{first.get_providers()[0]}]"
        batch_dim = first.get_inputs()[0].shape[0]
        # a static batch N: padded up to N, run N at a time
        self.fixed_batch = batch_dim if isinstance(batch_dim, int) and batch_dim > 0 else None
        self.max_batch = self.fixed_batch or 64
        self.uint8_input = first.get_inputs()[0].type == "tensor(uint8)"

    @staticmethod
    def _check_io(session: Any, path: Path) -> None:
        inputs = [arg.name for arg in session.get_inputs()]
        outputs = [arg.name for arg in session.get_outputs()]
        if inputs != [INPUT_NAME] or not set(OUTPUT_NAMES) <= set(outputs):
            raise RuntimeSourceError(
                f"{path} has inputs {inputs} and outputs {outputs}; an hjepa export has input '{INPUT_NAME}' and "
                f"outputs {list(OUTPUT_NAMES)}"
            )

    @staticmethod
    def _check_input_shape(session: Any, path: Path, props: dict[str, Any]) -> None:
        """The graph takes the images its metadata describes, or every call fails deep in onnxruntime."""
        size, input_format = props.get("img_size"), props.get("input_format", "float_nchw")
        if not isinstance(size, int) or input_format not in ("float_nchw", "uint8_nhwc"):
            return  # metadata_from_levels names the bad key
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
        """An ``.onnx`` file (one level) or an export directory."""
        import onnxruntime as ort

        providers = choose_providers(provider, device, list(ort.get_available_providers()))
        if path.is_dir():
            manifest = read_manifest(path)
            files = {k: entry["onnx"] for k, entry in manifest.files.items() if entry["onnx"] is not None}
            if not files:
                raise RuntimeSourceError(f"{path}/manifest.json lists no .onnx files")
            for file in files.values():
                if not file.is_file():
                    raise RuntimeSourceError(f"{file} is listed in {path}/manifest.json but does not exist")
            return cls(files, providers, manifest.metadata, manifest.config, source=str(path))
        return cls({None: path}, providers, source=str(path))

    def _forward(self, batch: np.ndarray, level: int) -> tuple[np.ndarray, np.ndarray]:
        count = batch.shape[0]
        if self.fixed_batch is not None and count < self.fixed_batch:
            padding = np.zeros((self.fixed_batch - count, *batch.shape[1:]), batch.dtype)
            batch = np.concatenate([batch, padding])
        feed = self.to_pixels(batch) if self.uint8_input else batch
        tokens, pooled = self.sessions[level].run(list(OUTPUT_NAMES), {INPUT_NAME: feed})
        return tokens[:count], pooled[:count]


def _config_or_none(config: dict[str, Any] | None) -> Any:
    """The manifest's config (for mask settings), or None."""
    if not config:
        return None
    from hjepa.config import Config, ConfigError

    try:
        return Config.from_dict(config)
    except (ConfigError, TypeError, ValueError):
        return None
