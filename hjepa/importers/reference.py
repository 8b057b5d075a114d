"""An independent forward on the raw source tensors, for the parity proof: written from the published pre-norm ViT,
not hjepa's or timm's modules, in float64, reading the source's own key names a second time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

LAYOUTS = ("fused", "hf")


@dataclass(frozen=True)
class ReferenceSpec:
    """How to read the raw tensors: ``layout`` (``fused`` | ``hf``), key ``prefix``, heads, LayerNorm eps, depth."""

    layout: str
    prefix: str
    num_heads: int
    norm_eps: float
    depth: int
    class_token: bool = False


def _layer_norm(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float) -> torch.Tensor:
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    out = (x - mean) / torch.sqrt(var + eps)
    return out if weight is None else out * weight + bias


def _gelu(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return x @ weight.T + bias


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    batch, length, width = q.shape
    d = width // heads

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(batch, length, heads, d).permute(0, 2, 1, 3)

    scores = split(q) @ split(k).transpose(-1, -2) / math.sqrt(d)
    weights = torch.exp(scores - scores.amax(-1, keepdim=True))
    weights = weights / weights.sum(-1, keepdim=True)
    return (weights @ split(v)).permute(0, 2, 1, 3).reshape(batch, length, width)


def _patches(images: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Patch projection as a matmul over ``unfold``ed patches, not a convolution."""
    patch = weight.shape[-1]
    cols = torch.nn.functional.unfold(images, kernel_size=patch, stride=patch)  # [B, C*p*p, N]
    return cols.transpose(1, 2) @ weight.reshape(weight.shape[0], -1).T + bias


class _Float64:
    """Float64 as read, a block at a time: never a 5 GB copy of a whole encoder."""

    def __init__(self, raw: dict[str, torch.Tensor], prefix: str) -> None:
        self.raw, self.prefix = raw, prefix

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.raw[self.prefix + key].double()


def reference_tokens(raw: dict[str, torch.Tensor], spec: ReferenceSpec, images: torch.Tensor) -> torch.Tensor:
    """Output patch tokens ``[B, N, D]``, float64, after the final norm."""
    w = _Float64(raw, spec.prefix)
    x = images.double()
    if spec.layout == "fused":
        x = _patches(x, w["patch_embed.proj.weight"], w["patch_embed.proj.bias"])
        pos = w["pos_embed"]
        if spec.class_token:
            cls = w["cls_token"].expand(x.shape[0], -1, -1)
            if pos.shape[1] == x.shape[1] + 1:
                x = torch.cat([cls, x], 1) + pos
            else:
                x = torch.cat([cls, x + pos], 1)
        else:
            x = x + pos
        for i in range(spec.depth):
            b = f"blocks.{i}."
            h = _layer_norm(x, w[b + "norm1.weight"], w[b + "norm1.bias"], spec.norm_eps)
            q, k, v = _linear(h, w[b + "attn.qkv.weight"], w[b + "attn.qkv.bias"]).chunk(3, dim=-1)
            x = x + _linear(_attention(q, k, v, spec.num_heads), w[b + "attn.proj.weight"], w[b + "attn.proj.bias"])
            h = _layer_norm(x, w[b + "norm2.weight"], w[b + "norm2.bias"], spec.norm_eps)
            h = _linear(_gelu(_linear(h, w[b + "mlp.fc1.weight"], w[b + "mlp.fc1.bias"])), w[b + "mlp.fc2.weight"],
                        w[b + "mlp.fc2.bias"])
            x = x + h
        x = _layer_norm(x, w["norm.weight"], w["norm.bias"], spec.norm_eps)
    elif spec.layout == "hf":
        e = "embeddings."
        x = _patches(x, w[e + "patch_embeddings.projection.weight"], w[e + "patch_embeddings.projection.bias"])
        x = x + w[e + "position_embeddings"]
        for i in range(spec.depth):
            b = f"encoder.layer.{i}."
            a = b + "attention.attention."
            h = _layer_norm(x, w[b + "layernorm_before.weight"], w[b + "layernorm_before.bias"], spec.norm_eps)
            q = _linear(h, w[a + "query.weight"], w[a + "query.bias"])
            k = _linear(h, w[a + "key.weight"], w[a + "key.bias"])
            v = _linear(h, w[a + "value.weight"], w[a + "value.bias"])
            out = _attention(q, k, v, spec.num_heads)
            x = x + _linear(out, w[b + "attention.output.dense.weight"], w[b + "attention.output.dense.bias"])
            h = _layer_norm(x, w[b + "layernorm_after.weight"], w[b + "layernorm_after.bias"], spec.norm_eps)
            h = _gelu(_linear(h, w[b + "intermediate.dense.weight"], w[b + "intermediate.dense.bias"]))
            x = x + _linear(h, w[b + "output.dense.weight"], w[b + "output.dense.bias"])
        x = _layer_norm(x, w["layernorm.weight"], w["layernorm.bias"], spec.norm_eps)
    else:
        raise ValueError(f"unknown reference layout {spec.layout!r}; valid: {', '.join(LAYOUTS)}")
    return x[:, 1:] if spec.class_token else x


def reference_levels(
    tokens: torch.Tensor, grid: tuple[int, int], levels: Sequence[int], head: str
) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Per level: ``(tokens [B, N_k, D], pooled [B, D])``, 2^k x 2^k cell means, then the head."""
    batch, _, dim = tokens.shape
    out = {}
    for level in levels:
        cell = 2**level
        rows, cols = grid[0] // cell, grid[1] // cell
        cells = tokens.reshape(batch, rows, cell, cols, cell, dim).mean(dim=(2, 4)).reshape(batch, rows * cols, dim)
        if head == "layernorm":
            cells = _layer_norm(cells, None, None, 1e-5)
        out[level] = (cells, cells.mean(1))
    return out
