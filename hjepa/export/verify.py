"""Check an exported artifact against a reference: max absolute error and cosine similarity of both outputs.

Every export is verified before it is kept: onnxruntime (CPU) against the float32 PyTorch module, and a TensorRT
engine against onnxruntime, at batch 1 and at a larger batch (which also exercises the dynamic batch axis). Above
the tolerance the export fails with the figures in the message; the figures of a passing export go to the manifest.
Reduced precisions get looser tolerances (``tolerance_for``) because their error is expected, not a bug: float16
keeps ~3 significant digits, and int8 dynamic quantization rounds every weight to one of 255 steps per channel.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hjepa.config import ExportConfig
from hjepa.export.errors import ExportError
from hjepa.inference.runtimes import sessions
from hjepa.inference.runtimes.sessions import INPUT_NAME, OUTPUT_NAMES

RunFn = Callable[[np.ndarray], Sequence[np.ndarray]]  # input batch -> (tokens [B, N_k, D], pooled [B, D])


@dataclass(frozen=True)
class Tolerance:
    """Largest allowed absolute difference and smallest allowed cosine similarity (per token / per image)."""

    atol: float
    min_cosine: float


# Looser floors for reduced precision. Measured on the packaged model sizes (digits-debug, fashion-mnist, ViT-S/16):
# fp16 errors stay below ~1e-2 with cosine > 0.9999; int8 (7-bit weights) below ~0.07 with cosine > 0.9998.
_REDUCED = {"fp16": Tolerance(atol=5e-2, min_cosine=0.999), "int8": Tolerance(atol=0.25, min_cosine=0.99)}


def tolerance_for(precision: str, cfg: ExportConfig) -> Tolerance:
    """``cfg.export.atol`` / ``min_cosine`` for fp32; for fp16 / int8 whichever is looser of those and the floor."""
    base = Tolerance(cfg.atol, cfg.min_cosine)
    if precision == "fp32":
        return base
    floor = _REDUCED[precision]
    return Tolerance(max(base.atol, floor.atol), min(base.min_cosine, floor.min_cosine))


def sample_inputs(
    batch: int, img_size: int, input_format: str, mean: Sequence[float], std: Sequence[float], seed: int = 0
) -> np.ndarray:
    """Random images in the model's input format: float32 ``[B, 3, S, S]`` normalised, or uint8 ``[B, S, S, 3]``.

    Smooth random shapes plus pixel noise, so activations look more like those of photos than pure noise would.
    """
    generator = torch.Generator().manual_seed(seed * 1000 + batch)
    coarse = torch.rand(batch, 3, max(img_size // 4, 1), max(img_size // 4, 1), generator=generator)
    smooth = torch.nn.functional.interpolate(coarse, size=(img_size, img_size), mode="bilinear", align_corners=False)
    noise = torch.rand(batch, 3, img_size, img_size, generator=generator) - 0.5
    pixels = ((smooth + 0.2 * noise).clamp(0, 1) * 255).round().to(torch.uint8)
    if input_format == "uint8_nhwc":
        return pixels.permute(0, 2, 3, 1).contiguous().numpy()
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return ((pixels.float() / 255.0 - mean_t) / std_t).numpy()


def _row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.reshape(-1, a.shape[-1]).astype(np.float64)
    b = b.reshape(-1, b.shape[-1]).astype(np.float64)
    denom = np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return (a * b).sum(axis=1) / denom


def compare(
    reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray], names: Sequence[str] = OUTPUT_NAMES
) -> dict[str, dict[str, float]]:
    """Per output name: ``max_abs_err``, ``mean_abs_err``, ``min_cosine`` and ``mean_cosine`` (over rows)."""
    figures = {}
    for name, ref, out in zip(names, reference, candidate, strict=True):
        ref, out = np.asarray(ref, dtype=np.float32), np.asarray(out, dtype=np.float32)
        if ref.shape != out.shape:
            raise ExportError(f"output {name!r} has shape {list(out.shape)}, expected {list(ref.shape)}")
        if not np.isfinite(out).all():
            raise ExportError(f"output {name!r} contains NaN or infinite values")
        diff = np.abs(ref - out)
        cosines = _row_cosines(ref, out)
        figures[name] = {
            "max_abs_err": float(diff.max()),
            "mean_abs_err": float(diff.mean()),
            "min_cosine": float(cosines.min()),
            "mean_cosine": float(cosines.mean()),
        }
    return figures


def verify(
    candidate: RunFn,
    reference: RunFn,
    make_inputs: Callable[[int], np.ndarray],
    batches: Sequence[int],
    tolerance: Tolerance,
    what: str,
    against: str,
    names: Sequence[str] = OUTPUT_NAMES,
) -> dict[str, Any]:
    """Run both at every batch size, compare, and raise ``ExportError`` naming the worst excess; else the figures."""
    results: dict[str, Any] = {}
    for batch in batches:
        inputs = make_inputs(batch)
        figures = compare(reference(inputs), candidate(inputs), names)
        results[f"batch_{batch}"] = figures
        for name, fig in figures.items():
            if fig["max_abs_err"] > tolerance.atol or fig["min_cosine"] < tolerance.min_cosine:
                raise ExportError(
                    f"{what} does not match {against} at batch {batch}: {name} max abs error "
                    f"{fig['max_abs_err']:.3g} (allowed {tolerance.atol:.3g}), min cosine {fig['min_cosine']:.6f} "
                    f"(allowed {tolerance.min_cosine:.6f}); nothing was written"
                )
    return {"against": against, "tolerance": asdict(tolerance), "batches": results, "passed": True}


def cpu_session(path: str | Path | bytes, threads: int | None = None, spinning: bool = True) -> Any:
    """An onnxruntime CPU session with ``threads`` intra-op threads (default: torch's thread count); see
    :func:`hjepa.inference.runtimes.sessions.ort_session`."""
    return sessions.ort_session(path, threads=threads or sessions.default_threads(), spinning=spinning)


def ort_runner(session: Any, names: Sequence[str] = OUTPUT_NAMES) -> RunFn:
    return lambda inputs: session.run(list(names), {INPUT_NAME: inputs})


def recorded(reference: RunFn, make_inputs: Callable[[int], np.ndarray], batches: Sequence[int]) -> RunFn:
    """``reference``'s outputs for ``make_inputs(b)`` at every batch ``b``, computed now and replayed by the
    returned RunFn: the torch model can then be dropped before onnxruntime opens a large graph. It answers only
    the exact inputs it recorded (``verify`` asks for the same deterministic batches)."""
    records = [(inputs, list(reference(inputs))) for inputs in map(make_inputs, batches)]

    def replay(inputs: np.ndarray) -> list[np.ndarray]:
        for seen, outputs in records:
            if seen.shape == inputs.shape and np.array_equal(seen, inputs):
                return outputs
        raise ValueError(f"no recorded reference outputs for an input batch of shape {list(inputs.shape)}")

    return replay


def torch_runner(module: torch.nn.Module) -> RunFn:
    @torch.no_grad()
    def run(inputs: np.ndarray) -> list[np.ndarray]:
        return [t.float().numpy() for t in module(torch.from_numpy(inputs))]

    return run
