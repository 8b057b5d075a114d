"""Real-size pretrained encoders on the CPU: I-JEPA-layout ViT-L/16 and ViT-H/14 with random weights, from import
to the first answer, and steady latency of torch eager vs onnxruntime fp32 / int8 / fp16 beside the weight-GEMM
floor of the same shapes (what any runtime's matrix kernels could reach on this machine).

Each stage runs as its own process (the console commands a user runs), timed and measured by ``/usr/bin/time``
(peak RSS). The checkpoint is written as I-JEPA's ``train.py`` saves one: ``encoder`` / ``predictor`` /
``target_encoder`` with ``module.`` prefixes and the AdamW state of the trained parameters (``opt``), so the
import reads a file about 4x the encoder's size. Results: ``benchmarks/results/large_encoders.json`` and a table.

    python benchmarks/large_encoders.py --models vit_large_patch16_224,vit_huge_patch14_224 --batches 1,16
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import RESULTS, machine  # noqa: E402

BIN = Path(sys.executable).parent
# Latency of one runtime at each batch size, in a process of its own (its RSS is that runtime's).
LATENCY = r"""
import json, sys, time, numpy as np, torch
from hjepa.inference.runtimes.open import open_runtime
source, backend, batches, reps = sys.argv[1], sys.argv[2], [int(b) for b in sys.argv[3].split(",")], int(sys.argv[4])
start = time.perf_counter()
runtime = open_runtime(source, backend=backend, device="cpu")
size = runtime.metadata.img_size
rng = np.random.default_rng(0)
first = rng.standard_normal((1, 3, size, size)).astype(np.float32)
runtime.embed_preprocessed(first, 0)
out = {"first_answer_s": time.perf_counter() - start, "backend": runtime.backend}
for batch in batches:
    images = rng.standard_normal((batch, 3, size, size)).astype(np.float32)
    runtime.embed_preprocessed(images, 0, batch_size=batch)  # warm-up
    times = []
    for _ in range(reps if batch == 1 else max(1, reps // 3)):
        t = time.perf_counter()
        runtime.embed_preprocessed(images, 0, batch_size=batch)
        times.append(time.perf_counter() - t)
    median = float(np.median(times))
    out[f"batch_{batch}"] = {"latency_s": median, "img_per_s": batch / median, "runs": len(times)}
print("RESULT " + json.dumps(out))
"""


# The weight-GEMM floor (benchmarks/gemm_floor.py) of one encoder block at the model's token count, fp32 and int8 on
# onnxruntime and as torch matmuls, times the depth: how fast any runtime's kernels could run the level here. The
# patch embedding (0.1 % of ViT-H's multiply-adds), LayerNorm, GELU, softmax and the attention products are left out.
FLOOR = r"""
import json, sys, tempfile, time
from pathlib import Path
import numpy as np, onnxruntime as ort, torch
sys.path.insert(0, sys.argv[1])
from gemm_floor import floor_model, floor_runner
from hjepa.export.onnx_export import save_onnx
from hjepa.export.quantize import quantize_int8
from hjepa.importers.architectures import ARCHITECTURES
arch = ARCHITECTURES[sys.argv[2]]
batches, reps = [int(b) for b in sys.argv[3].split(",")], int(sys.argv[4])
tokens, dim, hidden = (arch.img_size // arch.patch_size) ** 2, arch.embed_dim, arch.mlp_hidden_dim
gemms = [("linear", tokens, dim, 3 * dim), ("linear", tokens, dim, dim), ("linear", tokens, dim, hidden),
         ("linear", tokens, hidden, dim)]
macs = arch.depth * sum(rows * fan_in * fan_out for _, rows, fan_in, fan_out in gemms)
def median_s(run, batch):
    run(batch)
    times = []
    for _ in range(reps if batch == 1 else max(1, reps // 3)):
        t = time.perf_counter(); run(batch); times.append(time.perf_counter() - t)
    return float(np.median(times)) * arch.depth
out = {"gmacs_per_image": macs / 1e9}
with tempfile.TemporaryDirectory() as tmp:
    fp32 = save_onnx(floor_model(gemms), Path(tmp) / "block_fp32.onnx")
    int8 = Path(tmp) / "block_int8.onnx"
    quantize_int8(fp32, int8)
    for name, path in (("ort_fp32", fp32), ("ort_int8", int8)):
        options = ort.SessionOptions(); options.intra_op_num_threads = torch.get_num_threads()
        run = floor_runner(ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]))
        out[name] = {}
        for batch in batches:
            s = median_s(lambda b: run(np.zeros((b, 3, 1, 1), np.float32)), batch)
            out[name][f"batch_{batch}"] = {"latency_s": s, "gflop_s": 2 * macs * batch / s / 1e9}
weights = [torch.randn(fan_in, fan_out) / fan_in ** 0.5 for _, _, fan_in, fan_out in gemms]
out["torch_fp32"] = {}
for batch in batches:
    xs = [torch.randn(batch, rows, fan_in) for _, rows, fan_in, _ in gemms]
    def run(_b):
        with torch.inference_mode():
            for x, w in zip(xs, weights):
                x @ w
    s = median_s(run, batch)
    out["torch_fp32"][f"batch_{batch}"] = {"latency_s": s, "gflop_s": 2 * macs * batch / s / 1e9}
print("RESULT " + json.dumps(out))
"""


def ijepa_checkpoint(arch_name: str, path: Path, work: Path) -> dict:
    """Write an I-JEPA train.py checkpoint of ``arch_name`` with random weights and an AdamW state."""
    import torch

    from hjepa.importers.architectures import ARCHITECTURES
    from hjepa.models.pos_regrid import ijepa_sincos

    arch = ARCHITECTURES[arch_name]
    dim, hidden, patch = arch.embed_dim, arch.mlp_hidden_dim, arch.patch_size
    grid = arch.img_size // patch
    generator = torch.Generator().manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) / shape[-1] ** 0.5

    encoder = {"patch_embed.proj.weight": rand(dim, 3, patch, patch), "patch_embed.proj.bias": torch.zeros(dim),
               "pos_embed": ijepa_sincos(dim, (grid, grid))[None]}
    for i in range(arch.depth):
        b = f"blocks.{i}."
        encoder.update({b + "norm1.weight": torch.ones(dim), b + "norm1.bias": torch.zeros(dim),
                        b + "attn.qkv.weight": rand(3 * dim, dim), b + "attn.qkv.bias": torch.zeros(3 * dim),
                        b + "attn.proj.weight": rand(dim, dim), b + "attn.proj.bias": torch.zeros(dim),
                        b + "norm2.weight": torch.ones(dim), b + "norm2.bias": torch.zeros(dim),
                        b + "mlp.fc1.weight": rand(hidden, dim), b + "mlp.fc1.bias": torch.zeros(hidden),
                        b + "mlp.fc2.weight": rand(dim, hidden), b + "mlp.fc2.bias": torch.zeros(dim)})
    encoder["norm.weight"], encoder["norm.bias"] = torch.ones(dim), torch.zeros(dim)
    numel = sum(t.numel() for t in encoder.values())
    # AdamW's exp_avg and exp_avg_sq of the context encoder: views of one sparse file mapping, so writing the
    # checkpoint costs disk, not memory.
    sparse = work / "adam.bin"
    with open(sparse, "wb") as handle:
        handle.truncate(2 * numel * 4)
    moments = torch.from_file(str(sparse), shared=True, size=2 * numel, dtype=torch.float32)
    state, offset = {}, 0
    for index, tensor in enumerate(encoder.values()):
        n = tensor.numel()
        state[index] = {"step": torch.tensor(300.0), "exp_avg": moments[offset : offset + n].view(tensor.shape),
                        "exp_avg_sq": moments[numel + offset : numel + offset + n].view(tensor.shape)}
        offset += n
    checkpoint = {
        "encoder": {f"module.{k}": v for k, v in encoder.items()},
        "predictor": {"module.predictor_embed.weight": rand(384, dim)},
        "target_encoder": {f"module.{k}": v.clone() for k, v in encoder.items()},
        "opt": {"state": state, "param_groups": [{"lr": 1e-3, "params": list(state)}]},
        "scaler": None, "epoch": 300, "loss": 0.1, "batch_size": 2048, "world_size": 16, "lr": 1e-3,
    }
    torch.save(checkpoint, path)
    sparse.unlink()
    return {"parameters": numel, "fp32_bytes": numel * 4, "file_bytes": path.stat().st_size}


def timed(command: list[str], log: Path) -> dict:
    """Run ``command`` under /usr/bin/time; wall seconds, peak RSS (GB), exit status and its last output line."""
    stats = log.with_suffix(".time")
    with open(log, "w") as out:
        proc = subprocess.run(["/usr/bin/time", "-f", "%e %M", "-o", str(stats), *command], stdout=out,
                              stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall, peak_kb = stats.read_text().split()[-2:]
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    return {"wall_s": float(wall), "peak_rss_gb": int(peak_kb) / 1e6, "exit": proc.returncode,
            "last_line": lines[-1][:300] if lines else "", "load_average_after": os.getloadavg()}


def timed_script(script: str, argv: list[str], log: Path) -> dict:
    """``timed`` of ``python -c script argv``, with the JSON of the script's last ``RESULT`` line merged in."""
    result = timed([sys.executable, "-c", script, *argv], log)
    found = [line for line in log.read_text().splitlines() if line.startswith("RESULT ")]
    result.update(json.loads(found[-1][7:]) if found else {})
    return result


def served(source: Path, log: Path, timeout: float = 3600) -> dict:
    """``hjepa-serve SOURCE --no-gallery`` under /usr/bin/time: seconds until the app answers, seconds of the first
    ``/embed`` answer (a 224 px picture, through gradio_client as a user's script), and the server's peak RSS."""
    import urllib.request

    import numpy as np
    from gradio_client import Client, handle_file
    from PIL import Image

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    picture = log.with_suffix(".png")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)).save(picture)
    stats, url, result = log.with_suffix(".time"), f"http://127.0.0.1:{port}/", {}
    with open(log, "w") as out:
        proc = subprocess.Popen(["/usr/bin/time", "-f", "%e %M", "-o", str(stats), str(BIN / "hjepa-serve"),
                                 str(source), "--port", str(port), "--no-gallery"], stdout=out,
                                stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                                start_new_session=True)
        start = time.perf_counter()
        try:
            while proc.poll() is None and time.perf_counter() - start < timeout:
                try:
                    urllib.request.urlopen(url, timeout=5)
                    break
                except OSError:
                    time.sleep(2)
            result["app_up_s"] = time.perf_counter() - start
            tick = time.perf_counter()
            Client(url, verbose=False, httpx_kwargs={"timeout": timeout}).predict(handle_file(str(picture)),
                                                                                  api_name="/embed")
            result["first_embed_s"] = time.perf_counter() - tick
        finally:
            # SIGTERM to the server only (a background job ignores SIGINT): GNU time then writes its line
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
            for child in children.read_text().split() if proc.poll() is None else []:
                os.kill(int(child), signal.SIGTERM)
            proc.wait(120)
    wall, peak_kb = stats.read_text().split()[-2:]
    return {**result, "wall_s": float(wall), "peak_rss_gb": int(peak_kb) / 1e6, "exit": 0 if result else 1,
            "last_line": "", "load_average_after": os.getloadavg()}


def run_model(arch_name: str, work: Path, args: argparse.Namespace, record: dict, save: Callable[[], None]) -> None:
    """Every stage for one architecture into ``record`` (saved after each stage: a long run keeps what it did).
    ``args.stages`` picks some; ``args.artifact`` reuses an import made earlier (no checkpoint, no import)."""
    wanted = set(args.stages.split(",")) if args.stages else None
    record["model"] = arch_name
    artifact = Path(args.artifact) if args.artifact else work / f"{arch_name}-import"
    stages = {} if args.artifact else {"import": None}
    if args.artifact and "checkpoint" not in record:  # the fp32 bytes the table divides by
        record["checkpoint"] = {"fp32_bytes": (artifact / "encoder.safetensors").stat().st_size}
    flags_of = {"fp32": [], "int8": ["--int8"], "fp16": ["--half"], "fp32simplify": ["--simplify"]}
    for precision in args.precisions.split(","):
        stages[f"export_{precision}"] = [str(BIN / "hjepa-export"), str(artifact), "--level", "0", "--out",
                                         str(work / f"{arch_name}-{precision}"), *flags_of[precision]]
        # A reader of the export: k-NN on a few Fashion-MNIST pictures (peak RSS, not accuracy).
        stages[f"eval_{precision}"] = [str(BIN / "hjepa-eval"), "knn", str(work / f"{arch_name}-{precision}"),
                                       "--dataset", "fashion-mnist", "--level", "0", "--train-limit", "32",
                                       "--test-limit", "16", "--batch-size", "16", "--no-cache"]
        stages[f"serve_{precision}"] = "serve"
    stages = {name: command for name, command in stages.items() if wanted is None or name in wanted}
    if "import" in stages:
        ckpt = work / f"{arch_name}.pth.tar"
        start = time.perf_counter()
        record["checkpoint"] = ijepa_checkpoint(arch_name, ckpt, work)
        record["checkpoint"]["write_s"] = time.perf_counter() - start
        print(f"{arch_name}: checkpoint {record['checkpoint']['file_bytes'] / 1e9:.1f} GB", flush=True)
        stages["import"] = [str(BIN / "hjepa-import"), str(ckpt), "--arch", arch_name, "--out", str(artifact)]
    record.setdefault("stages", {})
    for name, command in stages.items():
        log = work / f"{arch_name}-{name}.log"
        if command == "serve":
            record["stages"][name] = served(work / f"{arch_name}-{name.split('_', 1)[1]}", log)
        else:
            record["stages"][name] = timed(command, log)
        print(f"  {name}: {record['stages'][name]}", flush=True)
        save()
        if name == "import":
            ckpt.unlink()  # the 4x file is not needed any more: keep the disk in check
    if wanted is None or "latency" in wanted:
        latency(arch_name, artifact, work, args, record, save)
    if wanted is None or "floor" in wanted:
        result = timed_script(FLOOR, [str(ROOT / "benchmarks"), arch_name, args.batches, str(args.reps)],
                              work / f"{arch_name}-floor.log")
        record["floor"] = result
        print(f"  weight-GEMM floor: {result}", flush=True)
        save()


def latency(arch_name: str, artifact: Path, work: Path, args: argparse.Namespace, record: dict,
            save: Callable[[], None]) -> None:
    """Steady latency of torch eager on the import and onnxruntime on each export, one process each."""
    batches, reps = args.batches, args.reps
    record.setdefault("latency", {})
    sources = {"torch": (artifact, "torch")}
    sources.update({f"ort_{p}": (work / f"{arch_name}-{p}", "onnxruntime") for p in args.precisions.split(",")})
    for name, (source, backend) in sources.items():
        log = work / f"{arch_name}-latency-{name}.log"
        result = timed_script(LATENCY, [str(source), backend, batches, str(reps)], log)
        record["latency"][name] = result
        print(f"  latency {name}: {result}", flush=True)
        save()


def table(records: list[dict], batches: list[int]) -> str:
    rows = ["| model | stage | wall s | peak RSS GB | x fp32 weights |", "|---|---|---|---|---|"]
    for rec in records:
        weights = rec["checkpoint"]["fp32_bytes"] / 1e9
        for name, stage in rec["stages"].items():
            ok = "" if stage["exit"] == 0 else " (failed)"
            rows.append(f"| {rec['model']} | {name}{ok} | {stage['wall_s']:.0f} | {stage['peak_rss_gb']:.2f} | "
                        f"{stage['peak_rss_gb'] / weights:.2f} |")
        for name, lat in rec.get("latency", {}).items():
            rows.append(f"| {rec['model']} | first answer {name} | {lat.get('first_answer_s', float('nan')):.1f} | "
                        f"{lat['peak_rss_gb']:.2f} | {lat['peak_rss_gb'] / weights:.2f} |")
    rows += ["", "| model | runtime | " + " | ".join(f"batch {b} s (img/s)" for b in batches) + " | x torch b1 |",
             "|---|---|" + "---|" * len(batches) + "---|"]
    for rec in records:
        base = rec.get("latency", {}).get("torch", {}).get("batch_1", {}).get("latency_s")
        for name, lat in rec.get("latency", {}).items():
            cells = []
            for b in batches:
                entry = lat.get(f"batch_{b}")
                cells.append(f"{entry['latency_s']:.2f} ({entry['img_per_s']:.2f})" if entry else "-")
            own = lat.get("batch_1", {}).get("latency_s")
            ratio = f"{base / own:.2f}x" if base and own else "-"
            rows.append(f"| {rec['model']} | {name} | " + " | ".join(cells) + f" | {ratio} |")
        for name, floor in rec.get("floor", {}).items():
            if not isinstance(floor, dict) or "batch_1" not in floor:
                continue
            cells = [f"{floor[f'batch_{b}']['latency_s']:.2f} ({floor[f'batch_{b}']['gflop_s']:.0f} GFLOP/s)"
                     if f"batch_{b}" in floor else "-" for b in batches]
            ratio = f"{base / floor['batch_1']['latency_s']:.2f}x" if base else "-"
            rows.append(f"| {rec['model']} | weight-GEMM floor, {name} | " + " | ".join(cells) + f" | {ratio} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="vit_large_patch16_224,vit_huge_patch14_224")
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--reps", type=int, default=5, help="timed runs at batch 1 (a third of them at larger)")
    parser.add_argument("--precisions", default="fp32,int8,fp16", help="exports to make and time, in this order")
    parser.add_argument("--work", default=None, help="scratch folder (default: a new one in /tmp, removed)")
    parser.add_argument("--stages", default=None,
                        help="only these: import, export_P, eval_P, serve_P (P a precision), latency, floor "
                        "(default: all)")
    parser.add_argument("--artifact", default=None, help="an import made earlier: its stages are skipped")
    parser.add_argument("--update", action="store_true",
                        help="merge into the stages of --out's record of the same model instead of replacing it")
    parser.add_argument("--keep", action="store_true",
                        help="keep the import and the exports in --work (a later run's --artifact and latency stage)")
    parser.add_argument("--note", default=None, help="how busy the machine was, saved with its description")
    parser.add_argument("--out", default=str(RESULTS / "large_encoders.json"))
    args = parser.parse_args()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="hjepa-large-"))
    work.mkdir(parents=True, exist_ok=True)
    records: list[dict] = json.loads(Path(args.out).read_text())["models"] if args.update else []

    def save() -> None:
        report = {"machine": {**machine(), "shared": args.note}, "load_average": os.getloadavg(), "models": records}
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")

    try:
        for name in args.models.split(","):
            record = next((rec for rec in records if rec.get("model") == name), None)
            if record is None:
                records.append(record := {})
            run_model(name, work, args, record, save)
            for path in work.glob(f"{name}-*"):  # exports of this model: gigabytes each
                if path.is_dir() and str(path) != args.artifact and not args.keep:
                    shutil.rmtree(path)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print(table(records, [int(b) for b in args.batches.split(",")]))


if __name__ == "__main__":
    main()
