"""Fault probe: kill training and export at random moments, and load the server, then check nothing was lost.

    python scripts/fault_probe.py                      # every case, about 2-4 minutes on a laptop CPU
    python scripts/fault_probe.py --cases export,server --kills 2 --seed 3

Cases (each bounded in count and time, all on the tiny ``digits-debug`` preset, CPU only, no network):

* ``checkpoint``: SIGKILL / SIGTERM ``hjepa-train`` while it checkpoints every step, then ``--resume``. Held when the
  resume succeeds and finishes the run, no ``*.tmp`` file is left in the run folder after it, and ``metrics.jsonl``
  holds every logged step exactly once (nothing truncated or wiped).
* ``export``: SIGTERM / SIGKILL ``hjepa-export`` while it re-exports over a previous export. Held when the previous
  export is still complete after the kill, the next export succeeds and leaves no ``.NAME.partial-*`` /
  ``.NAME.old-*`` folder, and a re-export over the user's own files (``levels_backup_2024.onnx``,
  ``triton/prod_model/config.pbtxt``) is refused with those files intact.
* ``server``: N concurrent ``gradio_client`` calls to ``/embed`` and ``/masks`` of ``hjepa-serve`` over 3 repeated
  pictures. Held when every answer equals the one a lone call gets.

Prints one row per case and a total line ``N held, M failed``; exits 1 when any case failed.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PRESET = "digits-debug"
# Checkpoint and log every step, so a kill at a random moment lands in (or right beside) a checkpoint write.
TRAIN_SETTINGS = ["train.steps=300", "train.checkpoint_every=1", "train.log_every=1", "train.keep_last=2"]
FOREIGN = {"levels_backup_2024.onnx": b"the user's backup", "triton/prod_model/config.pbtxt": b'name: "prod_model"\n'}


@dataclass
class Outcome:
    case: str
    held: bool
    detail: str


def hjepa(command: str, *args: str) -> list[str]:
    """The command line of an hjepa CLI, run by this interpreter (so PYTHONPATH and the venv apply)."""
    return [sys.executable, "-m", f"hjepa.cli.{command}", *args]


def run(command: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:160] if lines else ""


def kill_when(
    command: list[str], ready: Callable[[], bool], sig: int, delay: float, timeout: float
) -> tuple[bool, str]:
    """Start ``command``, wait until ``ready()``, sleep ``delay`` s, send ``sig``; returns (killed, its output)."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + timeout
    try:
        while process.poll() is None and not ready() and time.monotonic() < deadline:
            time.sleep(0.005)
        if process.poll() is None:
            time.sleep(delay)
        killed = process.poll() is None
        if killed:
            process.send_signal(sig)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return killed, output


# Case 1. Kill during checkpoint, then resume.
def metrics_steps(path: Path) -> list[int] | str:
    """The ``step`` of every line of ``metrics.jsonl``, or what is wrong with the file."""
    if not path.is_file():
        return "metrics.jsonl is missing"
    steps = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        try:
            steps.append(int(json.loads(line)["step"]))
        except (ValueError, KeyError, TypeError):
            return f"metrics.jsonl line {number} is not a complete record"
    return steps


def checkpoint_case(work: Path, sig: int, rng: random.Random, index: int) -> Outcome:
    name = f"kill-during-checkpoint {signal.Signals(sig).name} #{index}"
    out = work / f"train-{signal.Signals(sig).name}-{index}"
    args = ["--config", PRESET, "--out", str(out), *[item for s in TRAIN_SETTINGS for item in ("--set", s)]]
    last = out / "checkpoints" / "last.pt"
    killed, output = kill_when(hjepa("train", *args), last.is_file, sig, rng.uniform(0.0, 1.5), timeout=300)
    if not killed:
        return Outcome(name, False, f"training ended before the kill: {last_line(output)}")
    resumed = run(hjepa("train", *args, "--resume"), timeout=600)
    if resumed.returncode != 0:
        why = last_line(resumed.stdout + resumed.stderr)
        return Outcome(name, False, f"resume failed (rc {resumed.returncode}): {why}")
    leftovers = sorted(str(p.relative_to(out)) for p in out.rglob("*.tmp"))
    if leftovers:
        return Outcome(name, False, f"{len(leftovers)} temp file(s) left after the resume: {', '.join(leftovers[:3])}")
    steps = metrics_steps(out / "metrics.jsonl")
    total = int(TRAIN_SETTINGS[0].split("=")[1])
    if isinstance(steps, str):
        return Outcome(name, False, steps)
    if steps != list(range(1, total + 1)):
        missing = sorted(set(range(1, total + 1)) - set(steps))
        twice = " and duplicates" if len(set(steps)) != len(steps) else ""
        return Outcome(name, False, f"metrics.jsonl has {len(steps)} steps, {len(missing)} missing "
                                    f"(first {missing[:3]}){twice}")
    return Outcome(name, True, f"resumed to step {total}; {len(steps)} metrics lines; no temp files")


# Case 2. Kill during export, then export again.
def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def export_case(work: Path, checkpoint: Path, sig: int, rng: random.Random, index: int) -> Outcome:
    name = f"kill-during-export {signal.Signals(sig).name} #{index}"
    parent = work / f"export-{signal.Signals(sig).name}-{index}"
    out = parent / "deploy"
    args = [str(checkpoint), "--out", str(out), "--format", "onnx", "--format", "triton"]
    first = run(hjepa("export", *args), timeout=300)
    if first.returncode != 0:
        return Outcome(name, False, f"first export failed: {last_line(first.stdout + first.stderr)}")
    before = snapshot(out)

    def staging() -> bool:
        return any(p.name.startswith(f".{out.name}.partial-") for p in parent.iterdir())

    killed, output = kill_when(hjepa("export", *args), staging, sig, rng.uniform(0.0, 2.0), timeout=300)
    if not killed:
        return Outcome(name, False, f"the export ended before the kill: {last_line(output)}")
    if snapshot(out) != before:
        return Outcome(name, False, "the previous export changed or vanished after the kill")
    again = run(hjepa("export", *args), timeout=300)
    if again.returncode != 0:
        return Outcome(name, False, f"the next export failed: {last_line(again.stdout + again.stderr)}")
    stale = sorted(p.name for p in parent.iterdir() if p.name != out.name)
    if stale:
        return Outcome(name, False, f"left beside --out after the next export: {', '.join(stale)}")
    for relative, data in FOREIGN.items():
        (out / relative).parent.mkdir(parents=True, exist_ok=True)
        (out / relative).write_bytes(data)
    with_user_files = snapshot(out)
    refused = run(hjepa("export", *args), timeout=300)
    if refused.returncode == 0 or snapshot(out) != with_user_files:
        return Outcome(name, False, "a re-export over the user's files went ahead or changed them")
    return Outcome(name, True, "previous export intact after the kill; next export left no staging folder; "
                               "user files kept")


# Case 3. Concurrent calls on repeated pictures.
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_case(work: Path, checkpoint: Path, calls: int) -> Outcome:
    import numpy as np
    from gradio_client import Client, handle_file
    from PIL import Image

    name = f"concurrent-server {calls} calls / 3 pictures"
    rng = np.random.default_rng(0)
    pictures = []
    for index in range(3):
        path = work / f"picture{index}.png"
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
        pictures.append(path)
    port = free_port()
    command = hjepa("serve", str(checkpoint), "--no-gallery", "--device", "cpu", "--port", str(port))
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert server.stdout is not None
        for line in server.stdout:
            if "serving on" in line:
                break
        else:
            return Outcome(name, False, "the server did not start")
        url = f"http://127.0.0.1:{port}/"
        # httpx's default 5 s timeout would count a slow machine as a wrong answer.
        settings = {"verbose": False, "httpx_kwargs": {"timeout": 120}}

        def answer(path: Path, endpoint: str) -> list[object]:
            args = (handle_file(str(path)),) if endpoint == "/embed" else (handle_file(str(path)), 0)
            result = Client(url, **settings).predict(*args, api_name=endpoint)
            pictures_out = [np.asarray(Image.open(item)).tobytes() for item in result[:2]]
            # /embed's details hold latencies, which differ call to call: its pooled vectors are the answer.
            text = {k: v["pooled"] for k, v in result[3]["levels"].items()} if endpoint == "/embed" else result[2]
            return [*pictures_out, json.dumps(text, sort_keys=True)]

        expected = {(p, e): answer(p, e) for p in pictures for e in ("/embed", "/masks")}

        def ask(index: int) -> str:
            key = (pictures[index % 3], ("/embed", "/masks")[index // 3 % 2])
            try:
                return "right" if answer(*key) == expected[key] else "wrong"
            except Exception as exc:  # a dropped connection or a cut file is a failed answer too
                return f"{type(exc).__name__}: {exc}"[:120]

        with concurrent.futures.ThreadPoolExecutor(calls) as pool:
            answers = list(pool.map(ask, range(calls)))
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    right = answers.count("right")
    problems = sorted({a for a in answers if a != "right"})
    shown = f"; {'; '.join(problems[:2])}" if problems else ""
    return Outcome(name, right == calls, f"{right}/{calls} right{shown}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default="checkpoint,export,server", help="comma-separated: checkpoint,export,server")
    parser.add_argument("--kills", type=int, default=2, help="kills per signal and case (SIGKILL and SIGTERM each)")
    parser.add_argument("--calls", type=int, default=20, help="concurrent calls in the server case")
    parser.add_argument("--seed", type=int, default=0, help="seeds the kill moments")
    parser.add_argument("--budget-s", type=float, default=900.0, help="no new case starts after this many seconds")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (printed) for inspection")
    options = parser.parse_args()
    cases = {name.strip() for name in options.cases.split(",") if name.strip()}
    unknown = cases - {"checkpoint", "export", "server"}
    if unknown:
        parser.error(f"unknown case(s) {', '.join(sorted(unknown))}; valid: checkpoint, export, server")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rng = random.Random(options.seed)
    work = Path(tempfile.mkdtemp(prefix="hjepa-fault-probe-"))
    start = time.monotonic()
    outcomes: list[Outcome] = []
    try:
        plans: list[tuple[str, Callable[[], Outcome]]] = []
        checkpoint = work / "base" / "checkpoints" / "last.pt"
        if cases & {"export", "server"}:
            base = run(hjepa("train", "--config", PRESET, "--out", str(work / "base")), timeout=600)
            if base.returncode != 0:
                print(f"cannot train the {PRESET} checkpoint: {last_line(base.stdout + base.stderr)}")
                return 1
        signals = (signal.SIGKILL, signal.SIGTERM)
        for index in range(options.kills):
            for sig in signals:
                if "checkpoint" in cases:
                    plans.append(("checkpoint", lambda s=sig, i=index: checkpoint_case(work, s, rng, i)))
                if "export" in cases:
                    plans.append(("export", lambda s=sig, i=index: export_case(work, checkpoint, s, rng, i)))
        if "server" in cases:
            plans.append(("server", lambda: server_case(work, checkpoint, options.calls)))
        for kind, plan in plans:
            if time.monotonic() - start > options.budget_s:
                outcomes.append(Outcome(kind, False, "not run: --budget-s spent"))
                continue
            try:
                outcomes.append(plan())
            except subprocess.TimeoutExpired as exc:
                outcomes.append(Outcome(kind, False, f"timed out: {' '.join(map(str, exc.cmd))[:100]}"))
            print(f"  {outcomes[-1].case}: {'held' if outcomes[-1].held else 'FAILED'}", file=sys.stderr, flush=True)
    finally:
        if options.keep:
            print(f"work folder: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    width = max(len(o.case) for o in outcomes) if outcomes else 4
    print(f"{'case':<{width}}  result  detail")
    for outcome in outcomes:
        print(f"{outcome.case:<{width}}  {'held' if outcome.held else 'FAILED':<6}  {outcome.detail}")
    held = sum(o.held for o in outcomes)
    print(f"{held} held, {len(outcomes) - held} failed ({time.monotonic() - start:.0f} s)")
    return 0 if held == len(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
