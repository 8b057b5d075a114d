"""One hit of a gallery search, shared by the in-memory gallery and the embedded-collection gallery."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Neighbour:
    """One hit: ``image`` uint8 ``[H, W, 3]``, ``label``, cosine ``similarity``, ``index``."""

    image: np.ndarray
    label: str
    similarity: float
    index: int
