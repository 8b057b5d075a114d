"""Runtimes: torch, onnxruntime and TensorRT behind one ``embed(images, level)``; sessions; image decoding."""
