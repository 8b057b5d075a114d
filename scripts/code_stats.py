"""Code shape and comment figures for hjepa/: long functions, long parameter lists, comment and docstring lengths.

    python scripts/code_stats.py [ROOT]   (default: hjepa)
"""

from __future__ import annotations

import ast
import io
import sys
import tokenize
from pathlib import Path

MAX_LINES, MAX_PARAMS = 90, 10


def is_click_callback(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """Decorated with ``@click.command`` / ``@<group>.command`` / ``@click.option``: click passes every option."""
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if isinstance(target, ast.Attribute) and target.attr in {"command", "option", "group", "argument"}:
            return True
    return False


def functions(root: Path):
    """``(path, name, lines, params, click)`` for every function and method under ``root``."""
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = node.args
                params = [*args.posonlyargs, *args.args, *args.kwonlyargs]
                count = len([a for a in params if a.arg not in {"self", "cls"}])
                yield path, node.name, node.end_lineno - node.lineno + 1, count, is_click_callback(node)


def docstring_lines(tree: ast.AST) -> int:
    total = 0
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(
                    first.value.value, str):
                total += first.end_lineno - first.lineno + 1
    return total


def comment_stats(root: Path) -> dict[str, float]:
    lengths, docs, code = [], 0, 0
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        tree = ast.parse(text)
        doc = docstring_lines(tree)
        docs += doc
        code_lines = set()
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type == tokenize.COMMENT and not token.string.startswith(("# noqa", "# type:")):
                lengths.append(len(token.string.lstrip("#").strip()))
            elif token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                                    tokenize.COMMENT, tokenize.ENDMARKER):
                code_lines.update(range(token.start[0], token.end[0] + 1))
        code += len(code_lines) - doc
    return {
        "comments": len(lengths),
        "mean_comment_chars": sum(lengths) / max(len(lengths), 1),
        "comments_over_100": sum(n > 100 for n in lengths),
        "docstring_lines_per_100_code": 100 * docs / max(code, 1),
    }


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "hjepa")
    rows = list(functions(root))
    long = sorted((r for r in rows if r[2] > MAX_LINES), key=lambda r: -r[2])
    wide = sorted((r for r in rows if r[3] > MAX_PARAMS and not r[4]), key=lambda r: -r[3])
    print(f"functions: {len(rows)}; over {MAX_LINES} lines: {len(long)}; over {MAX_PARAMS} params (not click): "
          f"{len(wide)}; longest: {max(r[2] for r in rows)} lines")
    for path, name, lines, _, _ in long:
        print(f"  long  {path}:{name} {lines} lines")
    for path, name, _, params, _ in wide:
        print(f"  wide  {path}:{name} {params} params")
    for key, value in comment_stats(root).items():
        print(f"{key}: {value:.1f}" if isinstance(value, float) else f"{key}: {value}")


if __name__ == "__main__":
    main()
