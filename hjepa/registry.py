"""Name -> constructor registries for the interchangeable parts (predictors, mask generators, losses, runtimes)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from hjepa.errors import HJEPAError

T = TypeVar("T")


class UnknownNameError(HJEPAError, KeyError):
    """A name that no entry of a registry has; the message lists the valid names. A KeyError, for callers that look
    names up, whose message prints as itself (a plain KeyError prints the repr of its argument)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class Registry:
    """``@REGISTRY.register("name")`` on a class or function; ``REGISTRY.get("name")`` returns it."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items:
                raise KeyError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj  # type: ignore[assignment]
            return obj

        return decorator

    def get(self, name: str) -> Callable[..., Any]:
        if name not in self._items:
            raise UnknownNameError(f"unknown {self.kind} {name!r}; valid names: {', '.join(self.names())}")
        return self._items[name]

    def build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self.get(name)(*args, **kwargs)

    def build_from(self, name: str, *args: Any, **offered: Any) -> Any:
        """Build ``name`` with the offered keywords its constructor names: a config offers every entry's settings,
        and each entry still refuses a misspelled keyword when called directly."""
        factory = self.get(name)
        accepted = inspect.signature(factory).parameters
        return factory(*args, **{key: value for key, value in offered.items() if key in accepted})

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items
