"""Inference: saved-model files (``artifacts``), ``runtimes`` behind one ``embed(images, level)``, ``features``.

Importing it pulls in neither onnxruntime nor TensorRT.
"""

from hjepa.inference.artifacts.hashing import file_sha256, model_identity
from hjepa.inference.artifacts.metadata import RuntimeMetadata, RuntimeSourceError, RuntimeUnavailableError
from hjepa.inference.runtimes.open import BACKENDS, open_runtime, source_kind
from hjepa.inference.runtimes.runtime import RUNTIMES, Runtime

__all__ = [
    "BACKENDS",
    "RUNTIMES",
    "Runtime",
    "RuntimeMetadata",
    "RuntimeSourceError",
    "RuntimeUnavailableError",
    "file_sha256",
    "model_identity",
    "open_runtime",
    "source_kind",
]
