"""Hugging Face ``IJepaModel`` weights: split ``query / key / value`` fused here into one ``qkv`` (q, k, v order).

Heads and eps come from ``config.json``, else ``--num-heads`` / ``--arch`` and eps 1e-6; a classifier is not imported.
"""

from __future__ import annotations

import math

import torch

from hjepa.importers.architectures import resolve_num_heads
from hjepa.importers.base import IMAGENET_MEAN, IMAGENET_STD, IMPORTERS, Conversion, ImportOptions, LoadedSource
from hjepa.importers.errors import ImportSourceError
from hjepa.importers.reference import ReferenceSpec
from hjepa.importers.source import SourceWeights
from hjepa.importers.vit_fused import block_count
from hjepa.models.pretrained import EncoderArchitecture

PATCH = "embeddings.patch_embeddings.projection.weight"
HEADS_NOT_IMPORTED = ("classifier.", "pooler.", "embeddings.mask_token")


@IMPORTERS.register("hf-ijepa")
class HFIJepaImporter:
    name = "hf-ijepa"

    def matches(self, source: LoadedSource) -> bool:
        state = source.state
        return isinstance(state, dict) and (PATCH in state or f"ijepa.{PATCH}" in state)

    def convert(self, source: LoadedSource, options: ImportOptions) -> Conversion:
        if options.encoder != "target":
            raise ImportSourceError("a Hugging Face IJepaModel holds one encoder; --encoder context does not apply")
        state = {k[len("ijepa."):] if k.startswith("ijepa.") else k: v for k, v in source.state.items()}
        dropped = sorted(k for k in state if k.startswith(HEADS_NOT_IMPORTED))
        weights = SourceWeights({k: v for k, v in state.items() if k not in dropped}, source.path.name)
        weights.refuse([k for k in weights.keys() if k.endswith("cls_token")],
                       "an IJepaModel has no class token; this is another model type")
        config = source.config
        dim, in_chans, patch, _ = weights.shape(PATCH)
        depth = block_count(weights.keys(), r"encoder\.layer\.(\d+)\.")
        positions = weights.shape("embeddings.position_embeddings")
        side = math.isqrt(positions[1])
        if side * side != positions[1]:
            raise ImportSourceError(f"{weights.where}: {positions[1]} positions are not a square grid")
        hidden = weights.shape("encoder.layer.0.intermediate.dense.weight")[0]
        heads = options.num_heads or config.get("num_attention_heads")
        if options.num_heads is None and heads is not None and (
                not isinstance(heads, int) or heads < 1 or dim % heads):
            raise ImportSourceError(f"config.json num_attention_heads {heads!r} does not divide the width {dim} of "
                                    f"{weights.where}; pass --num-heads N to override it")
        heads = resolve_num_heads(dim, depth, hidden, patch, side * patch, options.arch, heads, weights.where)
        eps = float(config.get("layer_norm_eps", 1e-6))
        if config.get("hidden_act", "gelu") != "gelu":
            raise ImportSourceError(f"config.json hidden_act {config['hidden_act']!r}: only exact 'gelu' converts")
        if config.get("qkv_bias") is False:
            raise ImportSourceError("config.json qkv_bias false: hjepa's encoder has query / key / value biases")
        if in_chans != 3:
            raise ImportSourceError(f"{weights.where}: {in_chans} input channels; hjepa serves RGB images (3)")

        out: dict[str, torch.Tensor] = {
            "vit.patch_embed.proj.weight": weights.take(PATCH, (dim, 3, patch, patch)),
            "vit.patch_embed.proj.bias": weights.take("embeddings.patch_embeddings.projection.bias", (dim,)),
            "pos_embed": weights.take("embeddings.position_embeddings", (1, side * side, dim)),
        }
        for i in range(depth):
            b, t = f"encoder.layer.{i}.", f"vit.blocks.{i}."
            a = b + "attention.attention."
            qkv = [weights.take(f"{a}{part}.weight", (dim, dim)) for part in ("query", "key", "value")]
            qkv_bias = [weights.take(f"{a}{part}.bias", (dim,)) for part in ("query", "key", "value")]
            out[t + "attn.qkv.weight"] = torch.cat(qkv, 0)
            out[t + "attn.qkv.bias"] = torch.cat(qkv_bias, 0)
            pairs = {
                "norm1": ("layernorm_before", (dim,)), "attn.proj": ("attention.output.dense", None),
                "norm2": ("layernorm_after", (dim,)), "mlp.fc1": ("intermediate.dense", None),
                "mlp.fc2": ("output.dense", None),
            }
            shapes = {"attn.proj": ((dim, dim), (dim,)), "mlp.fc1": ((hidden, dim), (hidden,)),
                      "mlp.fc2": ((dim, hidden), (dim,))}
            for ours, (theirs, vector) in pairs.items():
                weight_shape, bias_shape = (vector, vector) if vector else shapes[ours]
                out[f"{t}{ours}.weight"] = weights.take(f"{b}{theirs}.weight", weight_shape)
                out[f"{t}{ours}.bias"] = weights.take(f"{b}{theirs}.bias", bias_shape)
        out["vit.norm.weight"] = weights.take("layernorm.weight", (dim,))
        out["vit.norm.bias"] = weights.take("layernorm.bias", (dim,))
        weights.finish()
        preprocessor = source.preprocessor
        return Conversion(
            weights=out, raw=dict(weights.tensors),
            architecture=EncoderArchitecture(embed_dim=dim, depth=depth, num_heads=heads, mlp_hidden_dim=hidden,
                                             patch_size=patch, img_size=side * patch, norm_eps=eps),
            reference=ReferenceSpec("hf", "", heads, eps, depth), licence=LICENCE_NOTE,
            provenance={"format": self.name, "encoder": "IJepaModel", "epoch": None, "not_imported": dropped,
                        "level0": "mean of last_hidden_state (after the final layernorm)"},
            mean=tuple(preprocessor.get("image_mean", IMAGENET_MEAN)),
            std=tuple(preprocessor.get("image_std", IMAGENET_STD)),
        )


# facebook/ijepa_* are the I-JEPA releases; another model's card says its own
LICENCE_NOTE = "CC-BY-NC-4.0 (as the I-JEPA releases; check the model card)"
