"""Collapse diagnostics of a batch of embeddings ``[B, D]``: are the features still spread out?"""

from __future__ import annotations

import torch


@torch.no_grad()
def collapse_diagnostics(embeddings: torch.Tensor) -> dict[str, float]:
    """Min / mean per-dimension std, participation ratio (Σλ)²/Σλ² and RankMe effective rank exp(H(σ/Σσ)).

    A collapsed representation has std -> 0 and both ranks -> 1; a healthy one keeps them well above 1.
    """
    z = embeddings.detach().float()
    if z.shape[0] < 2:
        return {}
    std = z.std(dim=0)
    centered = z - z.mean(dim=0)
    singular = torch.linalg.svdvals(centered)
    eig = singular.pow(2)
    participation = (eig.sum() ** 2 / eig.pow(2).sum().clamp_min(1e-12)).item()
    p = singular / singular.sum().clamp_min(1e-12)
    effective_rank = torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum()).item()
    return {
        "std_min": std.min().item(),
        "std_mean": std.mean().item(),
        "participation_ratio": participation,
        "effective_rank": effective_rank,
    }
