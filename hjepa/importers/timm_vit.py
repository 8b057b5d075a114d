"""timm ``VisionTransformer`` state dicts, its I-JEPA tags included; a class token attends but is not output."""

from __future__ import annotations

from hjepa.importers.base import IMPORTERS, Conversion, ImportOptions, LoadedSource
from hjepa.importers.errors import ImportSourceError
from hjepa.importers.source import SourceWeights, strip_prefix
from hjepa.importers.vit_fused import convert_fused_vit

WRAPPERS = ("state_dict", "model", "model_ema")


def _flat(state: object) -> dict | None:
    if isinstance(state, dict):
        for key in WRAPPERS:
            if isinstance(state.get(key), dict):
                state = state[key]
                break
        state = strip_prefix(dict(state), "module.")
        if "patch_embed.proj.weight" in state and "blocks.0.attn.qkv.weight" in state:
            return state
    return None


@IMPORTERS.register("timm")
class TimmImporter:
    name = "timm"

    def matches(self, source: LoadedSource) -> bool:
        return _flat(source.state) is not None

    def convert(self, source: LoadedSource, options: ImportOptions) -> Conversion:
        if options.encoder != "target":
            raise ImportSourceError("a timm state dict holds one encoder; --encoder context does not apply")
        state = _flat(source.state)
        if state is None:
            raise ImportSourceError(f"{source.path.name} is not a timm ViT state dict")
        dropped = sorted(k for k in state if k.startswith("head.") or k == "head")
        weights = SourceWeights({k: v for k, v in state.items() if k not in dropped}, source.path.name)
        conversion, _ = convert_fused_vit(weights, options, norm_eps=1e-6)
        weights.finish()
        conversion.provenance = {
            "format": self.name, "encoder": "VisionTransformer", "epoch": None, "not_imported": dropped,
            "level0": "mean of the output patch tokens after the final norm (timm global_pool='avg', no fc_norm)",
        }
        return conversion
