"""Why are a checkpoint's features weak? k-NN on the validation split (never test) for feature variants.

For a checkpoint, on the validation split carved from train (bank: 10k of the rest; queries: 2k held out):
- target encoder vs context encoder, per level;
- pooled (what export writes: level norm per cell, then the mean) vs the flattened level-k token map vs the pooled
  vector with the bank's mean removed (a diagnostic only: DINO's protocol does not centre);
- collapse metrics of the pooled features: participation ratio, effective rank, mean cosine between random pairs.

    python benchmarks/diagnose.py runs/fashion-mnist/checkpoints/last.pt --name diagnose_masked
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import print_table, write_json  # noqa: E402


def collapse(features: torch.Tensor) -> dict:
    centred = features - features.mean(0)
    eigenvalues = torch.linalg.eigvalsh(centred.T @ centred / len(centred)).clamp_min(0)
    probabilities = eigenvalues / eigenvalues.sum()
    entropy = -(probabilities * probabilities.clamp_min(1e-12).log()).sum()
    unit = torch.nn.functional.normalize(features, dim=1)
    pairs = torch.randperm(len(unit), generator=torch.Generator().manual_seed(0))
    return {"participation_ratio": float(eigenvalues.sum() ** 2 / eigenvalues.square().sum()),
            "effective_rank": float(entropy.exp()),
            "mean_pair_cosine": float((unit * unit[pairs]).sum(1).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--name", default="diagnose")
    parser.add_argument("--bank", type=int, default=10000)
    parser.add_argument("--queries", type=int, default=2000)
    args = parser.parse_args()

    from hjepa.inference.features.knn import knn_evaluate
    from hjepa.models.hierarchy import pool_tokens
    from hjepa.train.checkpoint import load_model
    from hjepa.train.knn_monitor import KnnMonitor

    model, cfg, _ = load_model(args.checkpoint, torch.device("cpu"))
    model.eval()
    cfg.train.knn_split = "val"
    monitor = KnnMonitor(cfg, torch.device("cpu"), args.bank, args.queries)

    @torch.no_grad()
    def tokens(encoder: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([encoder(monitor.transform(images[i:i + 500])) for i in range(0, len(images), 500)])

    def knn(bank: torch.Tensor, queries: torch.Tensor) -> float:
        result = knn_evaluate(bank, monitor.train_split[1], queries, monitor.test_split[1], ks=[20],
                              temperature=0.07, num_classes=monitor.num_classes)
        return round(result[20]["top1"], 2)

    rows = []
    for encoder_name in ("target", "context"):
        encoder = getattr(model, f"{encoder_name}_encoder")
        bank_tokens, query_tokens = tokens(encoder, monitor.train_split[0]), tokens(encoder, monitor.test_split[0])
        for level in range(model.num_levels):
            norm = model.target_heads[level]
            bank_map = norm(pool_tokens(bank_tokens, model.grid, level))
            query_map = norm(pool_tokens(query_tokens, model.grid, level))
            bank_pooled, query_pooled = bank_map.mean(1), query_map.mean(1)
            centre = bank_pooled.mean(0)
            row = {"encoder": encoder_name, "level": level,
                   "pooled": knn(bank_pooled, query_pooled),
                   "pooled_centred": knn(bank_pooled - centre, query_pooled - centre),
                   "token_map": knn(bank_map.flatten(1), query_map.flatten(1)) if bank_map.shape[1] <= 64 else None,
                   **{k: round(v, 3) for k, v in collapse(query_pooled).items()}}
            rows.append(row)
    print_table(rows, list(rows[0]))
    path = write_json(args.name, {"checkpoint": args.checkpoint, "config": cfg.to_dict(), "bank": args.bank,
                                  "queries": args.queries, "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
