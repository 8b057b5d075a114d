"""I-JEPA ``train.py`` checkpoints: DDP-prefixed encoders, no class token, the sin-cos table stored as a weight.

The table is used as stored: its channel order differs from ``sincos_2d``, so recomputing it would change every
feature. Weights are CC BY-NC 4.0.
"""

from __future__ import annotations

from typing import Any

from hjepa.importers.base import IMPORTERS, Conversion, ImportOptions, LoadedSource
from hjepa.importers.errors import ImportSourceError
from hjepa.importers.source import SourceWeights, strip_prefix
from hjepa.importers.vit_fused import convert_fused_vit

LICENCE = "CC-BY-NC-4.0"
ENCODER_KEYS = {"target": "target_encoder", "context": "encoder"}


def _is_state_dict(value: Any) -> bool:
    return isinstance(value, dict) and any(str(k).endswith("patch_embed.proj.weight") for k in value)


@IMPORTERS.register("ijepa")
class IJEPAImporter:
    name = "ijepa"

    def matches(self, source: LoadedSource) -> bool:
        state = source.state
        return isinstance(state, dict) and any(_is_state_dict(state.get(k)) for k in ENCODER_KEYS.values())

    def convert(self, source: LoadedSource, options: ImportOptions) -> Conversion:
        state = source.state
        key = ENCODER_KEYS[options.encoder]
        if not _is_state_dict(state.get(key)):
            present = [k for k in ENCODER_KEYS.values() if _is_state_dict(state.get(k))]
            hint = " (use --encoder context for the context encoder)" if "encoder" in present else ""
            raise ImportSourceError(
                f"{source.path.name} has no {key!r} state dict for --encoder {options.encoder}; it holds "
                f"{', '.join(map(str, state)) or 'nothing'}{hint}"
            )
        tensors = strip_prefix(dict(state[key]), "module.")
        weights = SourceWeights(tensors, f"{source.path.name}[{key}]")
        conversion, _ = convert_fused_vit(weights, options, norm_eps=1e-6)
        if conversion.architecture.class_token:
            raise ImportSourceError(f"{weights.where}: 'cls_token' found; I-JEPA encoders have none")
        weights.finish()
        conversion.licence = LICENCE
        epoch = state.get("epoch")
        conversion.provenance = {
            "format": self.name,
            "encoder": key,
            "epoch": int(epoch) if isinstance(epoch, int) else None,
            "not_imported": sorted(str(k) for k in state if k != key),  # training state
            "level0": "mean of the encoder's output tokens (after its final norm), as I-JEPA evaluates",
        }
        return conversion
