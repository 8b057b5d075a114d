"""Print the headline figures from benchmarks/results/*.json (whatever has been run)."""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def main() -> None:
    lines = []
    masks = load("masks")
    if masks:
        lines.append(f"masks: {json.dumps(masks.get('summary', masks.get('ratio', '')))[:200]}")
    matmul = load("matmul")
    if matmul:
        lines.append(f"matmul: {json.dumps(matmul.get('summary', ''))}")
    for name in ("train_step", "train_step_compile"):
        data = load(name)
        for row in (data or {}).get("rows", []):
            if "images_per_s" in row:
                extra = ""
                if "speedup_vs_reference_layout" in row:
                    extra += f"  x{row['speedup_vs_reference_layout']:.2f} vs I-JEPA's layout (same run)"
                if "mfu_bf16" in row:
                    extra += f"  {row['tflop_s']:.1f} TFLOP/s = {row['mfu_bf16'] * 100:.1f} % of bf16 peak"
                lines.append(
                    f"{name}: {row['setting']:<22} {row['device']:<4} compile={row['compile']!s:<5} "
                    f"{row['step_s'] * 1000:8.1f} ms/step {row['images_per_s']:9.1f} img/s{extra}"
                )
    knn = load("knn")
    if knn:
        lines.append(f"knn: {json.dumps(knn.get('rows', knn.get('results', '')))[:200]}")
    inference = load("inference")
    if inference:
        for row in inference.get("rows", []):
            lines.append(
                f"inference: {row['setting']:<12} {row['backend']:<30} {row['latency_ms']:8.2f} ms batch 1 "
                f"(x{row.get('latency_speedup', float('nan')):.2f} eager) {row['images_per_s']:9.1f} img/s batched"
            )
    print("\n".join(lines) if lines else "no results yet: run a benchmark first")


if __name__ == "__main__":
    main()
