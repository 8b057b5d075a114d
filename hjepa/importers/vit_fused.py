"""The timm / I-JEPA ViT names (fused ``attn.qkv``) -> ``ViTEncoder``'s, for three formats; the rest refused by key."""

from __future__ import annotations

import math
import re

import torch

from hjepa.importers.architectures import resolve_num_heads
from hjepa.importers.base import Conversion, ImportOptions
from hjepa.importers.errors import ImportSourceError
from hjepa.importers.reference import ReferenceSpec
from hjepa.importers.source import SourceWeights
from hjepa.models.pretrained import EncoderArchitecture

BLOCK_PARTS = ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")


def block_count(keys: list[str], pattern: str = r"blocks\.(\d+)\.") -> int:
    indices = {int(m.group(1)) for k in keys if (m := re.match(pattern, k))}
    if not indices:
        return 0
    if indices != set(range(max(indices) + 1)):
        raise ImportSourceError(f"blocks are not numbered 0..{max(indices)}: {sorted(indices)}")
    return max(indices) + 1


def refuse_unsupported(weights: SourceWeights) -> None:
    """What a plain pre-norm ViT cannot hold exactly."""
    keys = weights.keys()
    weights.refuse([k for k in keys if k == "reg_token" or k.endswith(".reg_token")],
                   "register tokens are not supported by hjepa's encoder")
    weights.refuse([k for k in keys if re.search(r"\.ls\d\.(gamma|weight)$", k) or k.endswith(".gamma_1")],
                   "LayerScale is not supported by hjepa's encoder")
    weights.refuse([k for k in keys if "rope" in k or "freqs" in k or ".attn.attn." in k],
                   "rotary position embeddings (RoPE) are not supported by hjepa's encoder")
    weights.refuse([k for k in keys if ".q_norm." in k or ".k_norm." in k],
                   "query / key normalisation is not supported by hjepa's encoder")
    weights.refuse([k for k in keys if k.startswith("fc_norm.")],
                   "fc_norm normalises the pooled vector, not the tokens (its tokens have no final norm)")
    weights.refuse([k for k in keys if k.startswith("attn_pool.")],
                   "attention pooling is not a per-token feature")
    if "patch_embed.proj.weight" in weights and len(weights.shape("patch_embed.proj.weight")) != 4:
        weights.refuse(["patch_embed.proj.weight"],
                       f"a {len(weights.shape('patch_embed.proj.weight'))}-D patch kernel (video tubelets) is not an "
                       "image encoder's 4-D one")


def convert_fused_vit(
    weights: SourceWeights, options: ImportOptions, norm_eps: float = 1e-6, prefix: str = ""
) -> tuple[Conversion, dict[str, torch.Tensor]]:
    """The conversion (licence, provenance still to fill) and the raw tensors for the reference."""
    refuse_unsupported(weights)
    patch_weight = weights.shape("patch_embed.proj.weight")
    dim, in_chans, patch, patch_w = patch_weight
    if patch != patch_w:
        raise ImportSourceError(f"{weights.where}: non-square patches {patch}x{patch_w} are not supported")
    depth = block_count(weights.keys())
    if depth == 0:
        raise ImportSourceError(f"{weights.where}: no transformer blocks (blocks.0.*) found")
    class_token = "cls_token" in weights
    positions = weights.shape("pos_embed")
    num_patches = positions[1] - (1 if class_token and int(math.isqrt(positions[1])) ** 2 != positions[1] else 0)
    side = math.isqrt(num_patches)
    if side * side != num_patches or len(positions) != 3 or positions[2] != dim:
        raise ImportSourceError(f"{weights.where}: pos_embed of shape {positions} is not a square grid of width {dim}")
    hidden = weights.shape("blocks.0.mlp.fc1.weight")[0]
    heads = resolve_num_heads(dim, depth, hidden, patch, side * patch, options.arch, options.num_heads, weights.where)

    out: dict[str, torch.Tensor] = {}
    out["vit.patch_embed.proj.weight"] = weights.take("patch_embed.proj.weight", patch_weight)
    out["vit.patch_embed.proj.bias"] = weights.take("patch_embed.proj.bias", (dim,))
    table = weights.take("pos_embed", positions)
    if class_token:
        out["cls_token"] = weights.take("cls_token", (1, 1, dim))
        if table.shape[1] == num_patches:  # positions on the patches only (timm no_embed_class): none for the class
            table = torch.cat([torch.zeros(1, 1, dim), table], dim=1)
    out["pos_embed"] = table
    shapes = {
        "norm1.weight": (dim,), "norm1.bias": (dim,), "attn.qkv.weight": (3 * dim, dim), "attn.qkv.bias": (3 * dim,),
        "attn.proj.weight": (dim, dim), "attn.proj.bias": (dim,), "norm2.weight": (dim,), "norm2.bias": (dim,),
        "mlp.fc1.weight": (hidden, dim), "mlp.fc1.bias": (hidden,), "mlp.fc2.weight": (dim, hidden),
        "mlp.fc2.bias": (dim,),
    }
    for i in range(depth):
        for name, shape in shapes.items():
            out[f"vit.blocks.{i}.{name}"] = weights.take(f"blocks.{i}.{name}", shape)
    out["vit.norm.weight"] = weights.take("norm.weight", (dim,))
    out["vit.norm.bias"] = weights.take("norm.bias", (dim,))
    raw = {prefix + k: weights.tensors[k] for k in weights.taken}
    conversion = Conversion(
        weights=out, raw=raw,
        architecture=EncoderArchitecture(embed_dim=dim, depth=depth, num_heads=heads, mlp_hidden_dim=hidden,
                                         patch_size=patch, img_size=side * patch, norm_eps=norm_eps,
                                         class_token=class_token),
        reference=ReferenceSpec("fused", prefix, heads, norm_eps, depth, class_token), licence=None,
    )
    if in_chans != 3:
        raise ImportSourceError(f"{weights.where}: {in_chans} input channels; hjepa serves RGB images (3)")
    return conversion, raw
