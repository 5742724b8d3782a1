"""Integer facts about pair counts that the engines and the metrics share.

Pure Python and numpy: no engine, no I/O.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np


def ceil_rank(fraction: float, count: int) -> int:
    """``ceil(fraction * count)``, at least 1, on the decimal value ``fraction`` prints as.

    The rank of the FAR order statistic ``t(F)`` (SPEC 5, ``F * M``) and the
    size of the worst set of epsilon-OPIS (SPEC 6, ``epsilon * C``). Exact:
    ``0.1 * 30`` is 3, not the 4 that binary floating point would give.
    """
    return max(1, math.ceil(Fraction(repr(float(fraction))) * count))


def evaluated(positives: np.ndarray, negatives: np.ndarray) -> np.ndarray:
    """Which classes (or groups) are evaluated: ``P > 0`` and ``M > 0`` (SPEC 3)."""
    return (np.asarray(positives) > 0) & (np.asarray(negatives) > 0)
