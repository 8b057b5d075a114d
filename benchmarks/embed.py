"""hjepa-embed end to end against the encoder alone, side by side in one run, and its FAISS search.

For each setting (the quickstart encoder, ``fashion-mnist-masked``: 32 px, patch 4; ViT-S/16 at 224), at random
init: write N JPEG pictures (96-160 px, as a folder of small photos), time the runtime's own encoder throughput on
already normalised batches of the same batch size, then ``embed_collection`` over the folder (decoding workers,
Parquet shards), and report img/s of both and their ratio (target >= 0.9). Then, on the quickstart features: exact
and IVF-PQ indexes, search latency (one query, 100 queries) and IVF-PQ recall@10 against exact search.

    python benchmarks/embed.py [--images 10000] [--vit-images 500] [--workers 1] [--batch 64]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import print_table, write_json  # noqa: E402
from PIL import Image  # noqa: E402

from hjepa.config import load_config  # noqa: E402
from hjepa.embed import EmbedOptions, embed_collection  # noqa: E402
from hjepa.embed.index import build_index  # noqa: E402
from hjepa.inference import open_runtime  # noqa: E402
from hjepa.inference.features.collection import feature_matrix, l2_normalise, read_columns  # noqa: E402
from hjepa.train.checkpoint import save_checkpoint  # noqa: E402
from hjepa.train.model import build_training_model  # noqa: E402

SETTINGS = {
    "quickstart": ("fashion-mnist-masked", []),
    "vit-s16-224": (None, ["model.encoder=vit_small", "model.img_size=224", "model.patch_size=16",
                           "model.num_levels=1", "model.predictor_depth=1"]),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10_000, help="pictures for the quickstart encoder")
    parser.add_argument("--vit-images", type=int, default=500, help="pictures for ViT-S/16 (slow on a CPU)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1, help="decoding processes")
    parser.add_argument("--queries", type=int, default=1000, help="queries for recall@10")
    parser.add_argument("--name", default="embed", help="results/NAME.json")
    return parser.parse_args()


def write_pictures(folder: Path, count: int, seed: int = 0) -> None:
    """``count`` JPEGs of 96-160 px in 100-picture sub-folders: smooth colour fields plus noise (compress like
    photos, not like flat colour)."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        height, width = (int(v) for v in rng.integers(96, 161, 2))
        ramp = np.linspace(0, 1, width)[None, :, None] * rng.uniform(0, 255, 3)
        pixels = np.clip(ramp + rng.normal(0, 30, (height, width, 3)) + rng.uniform(0, 100, 3), 0, 255)
        path = folder / f"{i // 100:04d}" / f"{i:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels.astype(np.uint8)).save(path, quality=90)


def checkpoint(name: str, directory: Path) -> Path:
    preset, overrides = SETTINGS[name]
    cfg = load_config(preset, overrides)
    torch.manual_seed(0)
    save_checkpoint(directory, 0, build_training_model(cfg).eval(), None, cfg)
    return directory / "last.pt"


def encoder_throughput(source: Path, batch: int, seconds: float = 20.0) -> float:
    """img/s of the runtime alone on normalised batches (what the embed loop hands it), after a warm-up batch."""
    runtime = open_runtime(source, device="cpu")
    size = runtime.metadata.img_size
    inputs = np.random.default_rng(0).normal(size=(batch, 3, size, size)).astype(np.float32)
    runtime.embed_levels(inputs, [0])
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or done < 3 * batch:
        runtime.embed_levels(inputs, [0])
        done += batch
    return done / (time.perf_counter() - start)


def bench_setting(name: str, count: int, args: argparse.Namespace, tmp: Path) -> tuple[dict, Path]:
    folder = tmp / f"pictures-{count}"
    if not folder.exists():
        write_pictures(folder, count)
    source = checkpoint(name, tmp / name)
    encoder = encoder_throughput(source, args.batch)
    out = tmp / f"embedded-{name}"
    summary = embed_collection(EmbedOptions(str(source), str(folder), str(out), levels="0", batch_size=args.batch,
                                            workers=args.workers, device="cpu", progress=False))
    assert summary["rows"] == count, summary
    end_to_end = count / summary["seconds"]
    encoder_after = encoder_throughput(source, args.batch)  # again: the shared machine's load drifts
    row = {"setting": name, "images": count, "batch": args.batch, "workers": args.workers,
           "encoder_img_s": encoder, "encoder_after_img_s": encoder_after, "embed_img_s": end_to_end,
           "ratio": end_to_end / ((encoder + encoder_after) / 2), "seconds": summary["seconds"]}
    return row, out


def bench_search(out: Path, queries: int) -> dict:
    table = read_columns(out, ["id", "level0"])
    features = l2_normalise(feature_matrix(table.column("level0")))
    rows = {}
    indexes = {}
    for kind, threshold in (("exact", len(features)), ("ivfpq", 0)):
        start = time.perf_counter()
        indexes[kind], record = build_index(features, threshold)
        rows[kind] = {"build_s": time.perf_counter() - start, "factory": record["factory"], **{
            k: record[k] for k in ("nlist", "m", "nbits", "nprobe") if k in record}}
    picked = features[np.random.default_rng(1).choice(len(features), min(queries, len(features)), replace=False)]
    _, truth = indexes["exact"].search(picked, 10)
    for kind, index in indexes.items():
        start = time.perf_counter()
        for query in picked[:100]:
            index.search(query[None], 10)
        rows[kind]["latency_1_query_ms"] = (time.perf_counter() - start) * 10.0
        start = time.perf_counter()
        _, found = index.search(picked[:100], 10)
        rows[kind]["latency_100_queries_ms"] = (time.perf_counter() - start) * 1000.0
        _, found = index.search(picked, 10)
        rows[kind]["recall_at_10"] = float(np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth, found,
                                                                                              strict=True)]))
    return {"rows": len(features), "dim": features.shape[1], "queries": len(picked), "indexes": rows}


def main() -> None:
    args = parse_args()
    results = []
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        row, quickstart_out = bench_setting("quickstart", args.images, args, tmp)
        results.append(row)
        search = bench_search(quickstart_out, args.queries)
        if args.vit_images:
            results.append(bench_setting("vit-s16-224", args.vit_images, args, tmp)[0])
    print_table(results, ["setting", "images", "batch", "workers", "encoder_img_s", "encoder_after_img_s",
                          "embed_img_s", "ratio", "seconds"])
    print(f"\nsearch over {search['rows']} x {search['dim']} quickstart features, {search['queries']} queries:")
    print_table([{"index": kind, **entry} for kind, entry in search["indexes"].items()],
                ["index", "factory", "build_s", "latency_1_query_ms", "latency_100_queries_ms", "recall_at_10"])
    print(f"written: {write_json(args.name, {'settings': vars(args), 'throughput': results, 'search': search})}")


if __name__ == "__main__":
    main()
