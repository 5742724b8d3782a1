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


#: the false match rates of ``fnmr_at_fmr`` (SPEC 14) and their JSON keys
FMR_LEVELS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)


def fmr_key(level: float) -> str:
    """``1e-3`` -> ``"1e-03"`` (the key of ``fnmr_at_fmr``)."""
    return f"{level:.0e}"


def fmr_rank(level: float, negatives: int) -> int | None:
    """``floor(F * M) + 1``: the rank of the negative distance below which
    ``fnmr_at_fmr`` counts (SPEC 14), on the decimal value ``F`` prints as;
    None when ``F * M < 1``."""
    fm = Fraction(repr(float(level))) * int(negatives)
    return math.floor(fm) + 1 if fm >= 1 else None


def evaluated(positives: np.ndarray, negatives: np.ndarray, rows: np.ndarray | None = None,
              min_rows: int = 2) -> np.ndarray:
    """Which classes (or groups) are evaluated (SPEC 3): ``P > 0``, ``M > 0`` and,
    when ``rows`` (rows per class) is given, at least ``min_rows`` rows
    (``--min-class-rows``; the default 2 adds nothing to ``P > 0``)."""
    ev = (np.asarray(positives) > 0) & (np.asarray(negatives) > 0)
    if rows is not None and min_rows > 2:
        ev &= np.asarray(rows) >= min_rows
    return ev
