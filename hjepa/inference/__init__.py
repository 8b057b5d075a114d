"""Inference: everything between a trained model and its users (evaluation, export, serving).

Saved-model files (checkpoint, artifact, metadata, hashing, levels), runtimes behind one ``embed(images, level)``
interface (``open_runtime`` picks one) and feature maths (extraction, cache, k-NN). Importing it pulls in neither
onnxruntime nor TensorRT.
"""

from hjepa.inference.hashing import file_sha256, model_identity
from hjepa.inference.metadata import RuntimeMetadata, RuntimeSourceError, RuntimeUnavailableError
from hjepa.inference.open import BACKENDS, open_runtime, source_kind
from hjepa.inference.runtime import RUNTIMES, Runtime

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
