"""Known architectures by name, for the head count weights cannot tell (``qkv`` is ``[3D, D]`` whatever the split)."""

from __future__ import annotations

from hjepa.importers.errors import ImportSourceError
from hjepa.models.pretrained import EncoderArchitecture

ARCHITECTURES: dict[str, EncoderArchitecture] = {
    # I-JEPA's releases; ViT-g/16 has MLP ratio 48/11
    "vit_huge_patch14_224": EncoderArchitecture(1280, 32, 16, 5120, 14, 224),
    "vit_huge_patch16_448": EncoderArchitecture(1280, 32, 16, 5120, 16, 448),
    "vit_giant_patch16_224": EncoderArchitecture(1408, 40, 16, 6144, 16, 224),
    # the standard ViT sizes, timm's names
    "vit_tiny_patch16_224": EncoderArchitecture(192, 12, 3, 768, 16, 224),
    "vit_small_patch16_224": EncoderArchitecture(384, 12, 6, 1536, 16, 224),
    "vit_base_patch16_224": EncoderArchitecture(768, 12, 12, 3072, 16, 224),
    "vit_large_patch16_224": EncoderArchitecture(1024, 24, 16, 4096, 16, 224),
}


def resolve_num_heads(
    embed_dim: int, depth: int, mlp_hidden_dim: int, patch_size: int, img_size: int,
    arch: str | None, num_heads: int | None, where: str,
) -> int:
    """From ``--num-heads``, ``--arch`` (checked), or the one known architecture of these sizes."""
    if num_heads is not None:
        if num_heads < 1 or embed_dim % num_heads:
            raise ImportSourceError(f"--num-heads {num_heads} does not divide the width {embed_dim} of {where}")
        return num_heads
    if arch is not None:
        known = ARCHITECTURES.get(arch)
        if known is None:
            raise ImportSourceError(f"unknown --arch {arch!r}; known: {', '.join(ARCHITECTURES)}")
        found = (embed_dim, depth, mlp_hidden_dim, patch_size, img_size)
        expected = (known.embed_dim, known.depth, known.mlp_hidden_dim, known.patch_size, known.img_size)
        if found != expected:
            raise ImportSourceError(
                f"{where} is not {arch}: (width, depth, MLP width, patch, image size) = {found}, {arch} has {expected}"
            )
        return known.num_heads
    heads = {a.num_heads for a in ARCHITECTURES.values()
             if (a.embed_dim, a.depth, a.mlp_hidden_dim) == (embed_dim, depth, mlp_hidden_dim)}
    if len(heads) == 1:
        return heads.pop()
    raise ImportSourceError(
        f"the attention head count of {where} (width {embed_dim}, depth {depth}) is not stored in its weights and "
        f"matches no known architecture; pass --num-heads N or --arch NAME (known: {', '.join(ARCHITECTURES)})"
    )
