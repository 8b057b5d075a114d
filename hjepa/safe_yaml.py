"""A bounded YAML reader for configs: hostile or broken files fail fast with a short, one-line reason.

``yaml.safe_load`` never runs code, but it still lets a small file cost a lot: 5,000 nested ``[`` overflow the
composer's recursion (a RecursionError traceback), a 420-byte alias chain ("billion laughs") builds a structure
whose repr in an error message is 28 MB, and a repeated key silently keeps the last value. Configs are small,
shallow trees, so everything beyond generous limits is refused instead.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

MAX_TEXT_CHARS = 1_000_000  # a config is a few kB; a bigger file is not one
MAX_DEPTH = 32  # configs nest three levels deep
MAX_NODES = 10_000  # nodes after expanding every alias; the largest preset has ~150
MAX_REASON_CHARS = 200


class YAMLLimitError(yaml.YAMLError):
    """A document beyond the limits above, or with a duplicate key; the message is one short line."""


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader with a nesting limit while composing and an error for duplicate keys while constructing."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        # The composer recurses once per nesting level; stop long before Python's recursion limit.
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise YAMLLimitError(f"nested deeper than {MAX_DEPTH} levels at line {mark.line + 1}")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        # Before merge keys (<<) flatten: an explicit key may override a merged one.
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key; the base constructor reports it
                continue
            if duplicate:
                line = key_node.start_mark.line + 1
                raise YAMLLimitError(f"duplicate key {_short(repr(key))} at line {line} (each key may appear once)")
        return super().construct_mapping(node, deep=deep)


def _check_expansion(root: Node) -> None:
    """Refuse alias graphs that expand beyond MAX_NODES nodes or MAX_DEPTH levels, or refer to themselves.

    Aliases share one node, so the composed graph stays small while the tree it stands for grows exponentially;
    sizes are counted per node with a memo, so the check costs one visit per distinct node.
    """
    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded nodes, expanded height)
    active: set[int] = set()

    def visit(node: Node, depth: int) -> tuple[int, int]:
        key = id(node)
        if key in active:
            raise YAMLLimitError("an alias refers to the node that contains it (a recursive structure)")
        if key not in sizes:
            if depth > MAX_DEPTH:
                raise YAMLLimitError(f"aliases expand to more than {MAX_DEPTH} levels of nesting")
            active.add(key)
            children: list[Node] = []
            if isinstance(node, SequenceNode):
                children = list(node.value)
            elif isinstance(node, MappingNode):
                children = [part for pair in node.value for part in pair]
            count, height = 1, 1
            for child in children:
                child_count, child_height = visit(child, depth + 1)
                count, height = count + child_count, max(height, child_height + 1)
                if count > MAX_NODES:
                    raise YAMLLimitError(f"aliases expand to more than {MAX_NODES} values")
            active.discard(key)
            sizes[key] = (count, height)
        count, height = sizes[key]
        if depth + height - 1 > MAX_DEPTH:
            raise YAMLLimitError(f"aliases expand to more than {MAX_DEPTH} levels of nesting")
        return count, height

    visit(root, 1)


def load_yaml(text: str) -> Any:
    """Parse one YAML document like ``yaml.safe_load``, within the limits above; raises ``yaml.YAMLError``."""
    if len(text) > MAX_TEXT_CHARS:
        raise YAMLLimitError(f"{len(text)} characters, more than a config may have ({MAX_TEXT_CHARS})")
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def describe_yaml_error(error: yaml.YAMLError) -> str:
    """One line, at most MAX_REASON_CHARS: what went wrong and where, without PyYAML's multi-line snippets."""
    if isinstance(error, yaml.MarkedYAMLError):
        parts = [error.context, error.problem]
        mark = error.problem_mark or error.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        reason = " ".join(part for part in parts if part) + where
    else:
        reason = str(error)
    return _short(" ".join(reason.split()))


def _short(text: str, limit: int = MAX_REASON_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
