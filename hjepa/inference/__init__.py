"""Inference: everything between a trained model and its users (evaluation, export, serving).

- ``checkpoint``: reading training checkpoints for inference (target encoder + level heads only);
- ``runtime`` / ``runtime_torch`` / ``runtime_onnx`` / ``runtime_tensorrt``: one ``embed(images, level) ->
  (tokens, pooled)`` interface, back-ends registered by name in ``RUNTIMES``; ``open.open_runtime`` picks one;
- ``metadata``: what a served model is (image size, patch size, mean / std, grids per level);
- ``sessions`` / ``tensorrt_engine``: onnxruntime session and TensorRT engine set-up, written once;
- ``features`` / ``cache`` / ``knn``: feature extraction (one encoder pass for every level), the on-disk feature
  cache and the k-NN classifier shared by evaluation, training's monitor and export's int8 check;
- ``hashing``: SHA-256 of files and live models; ``images``: decoding and centre-cropping images.

Importing this package pulls in neither onnxruntime nor TensorRT.
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
