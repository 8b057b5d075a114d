"""``SourceWeights``: each tensor taken exactly once, shape-checked; a partial load is how conversions go wrong."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from hjepa.importers.errors import ImportSourceError


class SourceWeights:
    """``take(key, shape)`` -> tensor (float32, contiguous); ``finish()`` -> error listing what nobody took."""

    def __init__(self, tensors: dict[str, torch.Tensor], where: str) -> None:
        bad = [k for k, v in tensors.items() if not isinstance(v, torch.Tensor)]
        if bad:
            raise ImportSourceError(f"{where}: entries that are not tensors: {', '.join(sorted(bad)[:5])}")
        self.tensors = tensors
        self.where = where
        self.taken: set[str] = set()

    def __contains__(self, key: str) -> bool:
        return key in self.tensors

    def keys(self) -> list[str]:
        return list(self.tensors)

    def shape(self, key: str) -> tuple[int, ...]:
        if key not in self.tensors:
            raise ImportSourceError(f"{self.where}: missing tensor {key!r}")
        return tuple(self.tensors[key].shape)

    def take(self, key: str, shape: Sequence[int] | None = None) -> torch.Tensor:
        """Float32; an error when missing, taken twice or misshapen."""
        if key not in self.tensors:
            raise ImportSourceError(f"{self.where}: missing tensor {key!r}")
        if key in self.taken:
            raise ImportSourceError(f"{self.where}: tensor {key!r} consumed twice (a converter bug)")
        tensor = self.tensors[key]
        if shape is not None and tuple(tensor.shape) != tuple(shape):
            raise ImportSourceError(
                f"{self.where}: tensor {key!r} has shape {tuple(tensor.shape)}, expected {tuple(shape)}"
            )
        if not tensor.is_floating_point():
            raise ImportSourceError(f"{self.where}: tensor {key!r} has dtype {tensor.dtype}, expected floating point")
        self.taken.add(key)
        return tensor.detach().float().contiguous()

    def refuse(self, keys: Iterable[str], why: str) -> None:
        """Stop on any of ``keys``: the encoder cannot reproduce it exactly."""
        found = [k for k in keys if k in self.tensors]
        if found:
            raise ImportSourceError(f"{self.where}: cannot convert {found[0]!r} exactly: {why}")

    def finish(self) -> None:
        """Every tensor taken, or an error listing the rest."""
        unused = sorted(set(self.tensors) - self.taken)
        if unused:
            shown = ", ".join(unused[:8]) + (f" (+{len(unused) - 8} more)" if len(unused) > 8 else "")
            raise ImportSourceError(f"{self.where}: {len(unused)} tensors would be left unused, refusing a partial "
                                    f"load: {shown}")


def strip_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Strip ``prefix`` (DDP's ``module.``) when every key has it."""
    if tensors and all(k.startswith(prefix) for k in tensors):
        return {k[len(prefix):]: v for k, v in tensors.items()}
    return tensors
