"""Rewrite imports of the old flat ``hjepa.inference.*`` modules to the split layout (for merging older branches).

    python scripts/remap_inference_imports.py hjepa tests benchmarks scripts docs

Idempotent: paths already in ``artifacts/``, ``runtimes/`` or ``features/`` are left alone.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

MAP = {
    "checkpoint": "artifacts.checkpoint", "artifact": "artifacts.artifact", "metadata": "artifacts.metadata",
    "hashing": "artifacts.hashing", "levels": "artifacts.levels",
    "open": "runtimes.open", "runtime": "runtimes.runtime", "runtime_onnx": "runtimes.runtime_onnx",
    "runtime_tensorrt": "runtimes.runtime_tensorrt", "runtime_torch": "runtimes.runtime_torch",
    "sessions": "runtimes.sessions", "tensorrt_engine": "runtimes.tensorrt_engine", "images": "runtimes.images",
    "features": "features.extract", "cache": "features.cache", "knn": "features.knn",
}
_NAMES = "|".join(sorted(MAP, key=len, reverse=True))
_DOTTED = re.compile(rf"\bhjepa\.inference\.({_NAMES})\b(?![/\w])(?!\.(?:extract|cache|knn)\b)")
_SLASHED = re.compile(rf"\bhjepa/inference/({_NAMES})\.py\b")
_FROM = re.compile(r"^([ \t]*)from hjepa\.inference import ([\w, ]+?)([ \t]*#.*)?$", re.M)
_NEW = re.compile(r"\bhjepa\.inference\.(artifacts|runtimes)\.")


def _from_import(match: re.Match) -> str:
    indent, items, tail = match.group(1), [x.strip() for x in match.group(2).split(",")], match.group(3) or ""
    if not all(item in MAP for item in items):
        return match.group(0)  # names from the package's __init__: unchanged
    groups: dict[str, list[str]] = {}
    for item in items:
        package, module = MAP[item].split(".")
        groups.setdefault(package, []).append(module)
    return "\n".join(f"{indent}from hjepa.inference.{p} import {', '.join(m)}{tail}" for p, m in groups.items())


def remap(text: str) -> str:
    text = _NEW.sub(lambda m: "\0" + m.group(1) + ".", text)  # protect the new paths
    text = _DOTTED.sub(lambda m: "hjepa.inference." + MAP[m.group(1)], text)
    text = text.replace("\0", "hjepa.inference.")
    text = _SLASHED.sub(lambda m: "hjepa/inference/" + MAP[m.group(1)].replace(".", "/") + ".py", text)
    return _FROM.sub(_from_import, text)


def main() -> None:
    for root in map(Path, sys.argv[1:]):
        for path in [root] if root.is_file() else sorted(root.rglob("*")):
            if path.suffix not in {".py", ".md"} or not path.is_file():
                continue
            text = path.read_text()
            if (new := remap(text)) != text:
                path.write_text(new)
                print(path)


if __name__ == "__main__":
    main()
