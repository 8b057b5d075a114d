"""``--level`` in one place: ``K``, ``"0,2"``, ``"all"`` or a list, checked with one message everywhere."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hjepa.errors import OptionError

LevelSpec = int | str | Sequence[int]


class LevelError(OptionError):
    """Not a level, a list or ``all``, or not in the model."""


def check_level(level: object, available: Sequence[int], where: str = "this model") -> int:
    """``level`` as an int, or LevelError naming ``where`` and the levels."""
    is_int = isinstance(level, (int, np.integer)) and not isinstance(level, bool)
    if not is_int or int(level) not in available:  # type: ignore[call-overload]
        raise LevelError(f"level {level!r} is not in {where}; available levels: {sorted(available)}")
    return int(level)  # type: ignore[call-overload]


def level_syntax(levels: LevelSpec) -> list[int] | None:
    """Unchecked: ``"0,2"`` -> [0, 2], ``"all"`` -> None."""
    if isinstance(levels, str):
        text = levels.strip().lower()
        if text == "all":
            return None
        try:
            picked = [int(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise LevelError(f"level {levels!r} is not a level number, a comma-separated list or 'all'") from None
    elif isinstance(levels, (int, np.integer)) and not isinstance(levels, bool):
        picked = [int(levels)]
    elif isinstance(levels, Sequence):
        picked = list(levels)
    else:
        raise LevelError(f"level {levels!r} is not a level number, a comma-separated list or 'all'")
    if not picked:
        raise LevelError("no level given: pass a level number, a comma-separated list or 'all'")
    return picked


def parse_levels(levels: LevelSpec, available: Sequence[int], where: str = "this model") -> list[int]:
    """The levels named, checked, repeats dropped; ``"all"`` -> every one ``available``."""
    picked = level_syntax(levels)
    if picked is None:
        return sorted(available)
    return list(dict.fromkeys(check_level(level, available, where) for level in picked))
