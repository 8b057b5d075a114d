"""``PretrainedEncoder``: an imported ViT (I-JEPA, Hugging Face, timm, the seed H-JEPA) as an inference-only model.

It has what inference reads from an ``HJEPA`` model (``target_encoder``, ``target_heads``, ``num_levels``, ``grid``,
``head_dim``, ``extract_features`` / ``extract_levels``, a ``config`` with the image and patch size) and nothing of
training. Levels are made as for hjepa's own encoders (:func:`hjepa.models.level_encoder.level_features`): level k
averages 2^k x 2^k cells of the output tokens, then the level head, which is either

- ``identity``: the tokens as the source evaluates them (I-JEPA's linear probe averages the target encoder's output
  tokens, which already went through the encoder's final norm), or
- ``layernorm``: a parameter-free LayerNorm, as the I-JEPA training target (``F.layer_norm`` of the output tokens).

:class:`EncoderArchitecture` is the ``architecture`` block of an imported artifact's ``encoder.json``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch.nn as nn

from hjepa.config import Config, DataConfig, ModelConfig
from hjepa.models.hierarchy import TargetNorm, check_levels
from hjepa.models.level_encoder import LevelFeatures
from hjepa.models.vit import ViTEncoder

FAMILY = "vit"
HEADS = ("identity", "layernorm")


class IdentityHead(nn.Identity):
    """The level head that keeps the tokens as they are (``out_features`` as the other heads report it)."""

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.out_features = embed_dim


@dataclass(frozen=True)
class EncoderArchitecture:
    """A plain pre-norm ViT as imported: sizes, norm eps, class token, stored positions, levels and level head."""

    embed_dim: int
    depth: int
    num_heads: int
    mlp_hidden_dim: int
    patch_size: int
    img_size: int
    in_chans: int = 3
    norm_eps: float = 1e-6
    class_token: bool = False
    num_levels: int = 1
    head: str = "identity"
    family: str = FAMILY
    pos_embed: str = "table"

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"level head must be one of {', '.join(HEADS)}, got {self.head!r}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"width {self.embed_dim} is not divisible by {self.num_heads} heads")
        if self.img_size % self.patch_size:
            raise ValueError(f"image size {self.img_size} is not a multiple of the patch size {self.patch_size}")

    @property
    def grid(self) -> tuple[int, int]:
        side = self.img_size // self.patch_size
        return side, side

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EncoderArchitecture:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown architecture keys {unknown}")
        return cls(**data)

    def config(self, name: str = "imported") -> Config:
        """A :class:`Config` describing this encoder (image / patch size, sizes, levels) for the runtimes."""
        model = ModelConfig(
            encoder="custom", img_size=self.img_size, patch_size=self.patch_size, in_chans=self.in_chans,
            embed_dim=self.embed_dim, depth=self.depth, num_heads=self.num_heads, num_levels=self.num_levels,
        )
        # imagefolder: no dataset of its own (an int8 k-NN check needs --data-dir, else it is skipped)
        return Config(name=name, model=model, data=DataConfig(dataset="imagefolder"))


class PretrainedEncoder(LevelFeatures, nn.Module):
    """An imported encoder with level heads: ``extract_levels(images [B, 3, S, S], levels)`` as ``HJEPA``'s."""

    def __init__(self, arch: EncoderArchitecture, name: str = "imported") -> None:
        super().__init__()
        self.architecture = arch
        self.config = arch.config(name)
        self.grid = arch.grid
        self.num_levels = arch.num_levels
        check_levels(self.grid, self.num_levels)
        self.head_dim = arch.embed_dim
        self.target_encoder = ViTEncoder(
            self.config.model, mlp_hidden_dim=arch.mlp_hidden_dim, norm_eps=arch.norm_eps,
            class_token=arch.class_token, stored_positions=arch.pos_embed == "table",
        )
        head = TargetNorm if arch.head == "layernorm" else IdentityHead
        self.target_heads = nn.ModuleList(head(arch.embed_dim) for _ in range(self.num_levels))
        self.requires_grad_(False)
        self.eval()

    @property
    def embed_dim(self) -> int:
        return self.target_encoder.embed_dim
