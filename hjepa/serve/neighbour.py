"""One hit of a gallery search, shared by the in-memory gallery and the embedded-collection gallery."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Neighbour:
    """One gallery hit: ``image`` uint8 ``[H, W, 3]``, its ``label``, cosine ``similarity`` and gallery ``index``."""

    image: np.ndarray
    label: str
    similarity: float
    index: int
