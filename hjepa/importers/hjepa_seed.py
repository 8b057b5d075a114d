"""The seed H-JEPA project's checkpoints: timm ViTs under ``target_encoder.vit``; RoPE attention is refused by key."""

from __future__ import annotations

from hjepa.importers.base import IMPORTERS, Conversion, ImportOptions, LoadedSource
from hjepa.importers.errors import ImportSourceError
from hjepa.importers.source import SourceWeights
from hjepa.importers.vit_fused import convert_fused_vit

PREFIXES = {"target": "target_encoder.", "context": "context_encoder."}


@IMPORTERS.register("hjepa-seed")
class SeedImporter:
    name = "hjepa-seed"

    def matches(self, source: LoadedSource) -> bool:
        state = source.state
        return isinstance(state, dict) and isinstance(state.get("model_state_dict"), dict) and any(
            str(k).startswith(tuple(PREFIXES.values())) for k in state["model_state_dict"]
        )

    def convert(self, source: LoadedSource, options: ImportOptions) -> Conversion:
        state = source.state["model_state_dict"]
        prefix = PREFIXES[options.encoder]
        tensors = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if not tensors:
            raise ImportSourceError(f"{source.path.name}: model_state_dict has no {prefix}* tensors")
        # anything beside .vit (rope buffers ...) is refused below
        inner = {k[len("vit."):] if k.startswith("vit.") else k: v for k, v in tensors.items()}
        dropped = sorted(k for k in inner if k.startswith("head."))
        weights = SourceWeights({k: v for k, v in inner.items() if k not in dropped},
                                f"{source.path.name}[model_state_dict.{prefix[:-1]}]")
        conversion, _ = convert_fused_vit(weights, options, norm_eps=1e-6)
        weights.finish()
        epoch = source.state.get("epoch")
        others = sorted({k.split(".")[0] for k in state if not k.startswith(prefix)})
        conversion.provenance = {
            "format": self.name, "encoder": prefix[:-1], "epoch": int(epoch) if isinstance(epoch, int) else None,
            "not_imported": others + dropped,
            "level0": "mean of the patch tokens after the final norm (class token dropped)",
        }
        return conversion
