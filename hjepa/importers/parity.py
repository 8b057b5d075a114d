"""The parity proof: the converted encoder against the reference forward, batch 1 and 4, every level.

Above ``TOLERANCE`` the import stops and nothing is written.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from hjepa.importers.base import Conversion
from hjepa.importers.errors import ImportSourceError
from hjepa.importers.reference import reference_levels, reference_tokens
from hjepa.models.pretrained import PretrainedEncoder

BATCHES = (1, 4)
# float32 against a float64 reference of the same maths: ~1e-6 relative
TOLERANCE = {"max_abs_relative": 1e-4, "min_cosine": 1 - 1e-5}


@torch.no_grad()
def measure_parity(model: PretrainedEncoder, conversion: Conversion, seed: int = 0) -> dict[str, Any]:
    """``{"batch_1": {"level0": {"max_abs_diff", "max_abs_reference", "min_cosine"}, ...}, "batch_4": ...}``."""
    size = model.architecture.img_size
    images = torch.randn(max(BATCHES), 3, size, size, generator=torch.Generator().manual_seed(seed))
    levels = list(range(model.num_levels))
    report: dict[str, Any] = {}
    for batch in BATCHES:
        x = images[:batch]
        ours = model.extract_levels(x, levels)
        reference = reference_levels(reference_tokens(conversion.raw, conversion.reference, x), model.grid, levels,
                                     model.architecture.head)
        per_level = {}
        for level in levels:
            tokens, pooled = ours[level]
            ref_tokens, ref_pooled = reference[level]
            per_level[f"level{level}"] = {
                "max_abs_diff": float((tokens.double() - ref_tokens).abs().max()),
                "max_abs_reference": float(ref_tokens.abs().max()),
                "min_cosine": float(F.cosine_similarity(pooled.double(), ref_pooled, dim=-1).min()),
            }
        report[f"batch_{batch}"] = per_level
    return report


def check_parity(report: dict[str, Any]) -> None:
    """Names the first batch and level above ``TOLERANCE``."""
    for batch, levels in report.items():
        for level, row in levels.items():
            bound = TOLERANCE["max_abs_relative"] * max(1.0, row["max_abs_reference"])
            if row["max_abs_diff"] > bound or row["min_cosine"] < TOLERANCE["min_cosine"]:
                raise ImportSourceError(
                    f"conversion does not reproduce the source ({batch}, {level}: max abs diff "
                    f"{row['max_abs_diff']:.3g} > {bound:.3g} or cosine {row['min_cosine']:.8f} < "
                    f"{TOLERANCE['min_cosine']}); nothing written"
                )
