"""The package's import arrows, checked over every import in ``hjepa/`` (function-local and TYPE_CHECKING ones too).

cli -> {train, importers, export, evaluation, serve} -> inference -> {models, masks, losses, data} -> {config,
registry, device, dist}: a module may import its own package and any package of a lower layer. Inside inference,
runtimes and features build on artifacts and not on each other; the package's __init__ sits above all three.
Within the lowest two layers siblings may import each other (masks' query layouts are used by the predictors)
as long as no cycle forms, except that ``models`` never imports ``losses`` (the training side wires the loss).
``train``, ``importers``, ``export``, ``evaluation`` and ``serve`` never import each other.
No cycles, between packages or between modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "hjepa"

# The top-level name of every module / package in hjepa/ -> its layer (higher imports lower).
LAYERS = {
    "__init__": 0, "config": 0, "config_checks": 0, "safe_yaml": 0, "registry": 0, "device": 0, "dist": 0,
    "errors": 0, "configs": 0, "files": 0, "logs": 0,
    "models": 1, "masks": 1, "losses": 1, "data": 1,
    "inference.artifacts": 2,  # saved-model files
    "inference.runtimes": 3, "inference.features": 3,
    "inference": 4,  # the package's own __init__
    "train": 5, "importers": 5, "export": 5, "evaluation": 5, "serve": 5,
    "cli": 6, "demo": 6,
}
SIBLINGS_ALLOWED = {0, 1, 6}  # layers whose members may import each other (acyclically)
FORBIDDEN = {("models", "losses")}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def imports(path: Path, known: set[str]) -> list[tuple[str, int]]:
    """Every hjepa module ``path`` imports, resolved to the most specific module that exists, with line numbers."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            if isinstance(node, ast.ImportFrom) and node.level:
                raise AssertionError(f"{path}:{node.lineno}: relative import; spell the module out")
            continue
        for name in names:
            if name != "hjepa" and not name.startswith("hjepa."):
                continue
            while name not in known and "." in name:
                name = name.rsplit(".", 1)[0]
            found.append((name, node.lineno))
    return found


def top(module: str) -> str:
    """The unit LAYERS names: the top-level name, or ``inference.<subpackage>`` inside inference."""
    parts = module.split(".")
    if len(parts) > 2 and parts[1] == "inference":
        return f"inference.{parts[2]}"
    return parts[1] if len(parts) > 1 else "__init__"


def graph() -> tuple[dict[str, set[str]], list[tuple[str, str, str]]]:
    """Module graph (edges between hjepa modules) and the list of (importer, imported, where) across packages."""
    mods = modules()
    known = set(mods)
    edges: dict[str, set[str]] = {name: set() for name in mods}
    crossings = []
    for name, path in mods.items():
        for target, line in imports(path, known):
            if target == name:
                continue
            # A package's __init__ importing its own submodules is how packages export; not an arrow.
            if path.name == "__init__.py" and target.startswith(name + "."):
                continue
            edges[name].add(target)
            if top(name) != top(target):
                crossings.append((top(name), top(target), f"{path.relative_to(ROOT.parent)}:{line} imports {target}"))
    return edges, crossings


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_every_top_level_name_has_a_layer():
    unknown = sorted({top(name) for name in modules()} - set(LAYERS))
    assert not unknown, f"give these a layer in LAYERS: {unknown}"


def test_arrows_point_down():
    _, crossings = graph()
    wrong = []
    for source, target, where in crossings:
        high, low = LAYERS[source], LAYERS[target]
        sideways = high == low and high in SIBLINGS_ALLOWED
        if (source, target) in FORBIDDEN or not (low < high or sideways):
            wrong.append(where)
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_no_cycle_between_packages():
    _, crossings = graph()
    packages: dict[str, set[str]] = {}
    for source, target, _ in crossings:
        packages.setdefault(source, set()).add(target)
    assert find_cycle(packages) is None, f"package cycle: {' -> '.join(find_cycle(packages) or [])}"


def test_no_cycle_between_modules():
    edges, _ = graph()
    cycle = find_cycle(edges)
    assert cycle is None, f"module cycle: {' -> '.join(cycle or [])}"


@pytest.mark.parametrize("rule", ["down", "sideways", "forbidden", "artifacts-up", "runtimes-features"])
def test_the_checker_catches_what_it_should(rule):
    """The rules above would fail on a bad arrow: a check that cannot fail checks nothing."""
    pairs = {"down": ("models", "inference"), "sideways": ("export", "serve"), "forbidden": ("models", "losses"),
             "artifacts-up": ("inference.artifacts", "inference.runtimes"),
             "runtimes-features": ("inference.runtimes", "inference.features")}
    source, target = pairs[rule]
    high, low = LAYERS[source], LAYERS[target]
    allowed = (source, target) not in FORBIDDEN and (low < high or (high == low and high in SIBLINGS_ALLOWED))
    assert not allowed
    assert find_cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]


def test_inference_subpackages_are_told_apart():
    assert top("hjepa.inference.runtimes.open") == "inference.runtimes"
    assert top("hjepa.inference") == "inference" and top("hjepa.export.api") == "export"
