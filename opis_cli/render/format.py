"""Numbers as text: the one set of formatters every output uses.

The terminal tables, the Markdown and JUnit summaries, the HTML reports and
the figure captions all show numbers through these functions, and a value
that is missing (``None``, NaN or infinite) always as :data:`MISSING`.
Pure Python: no rich, no matplotlib.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any

#: How every output shows a missing number.
MISSING = "n/a"


def finite(v: Any) -> bool:
    """Whether ``v`` is a finite real number (``None``, NaN, infinities and text are not)."""
    return isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v)


def num(v: Any, spec: str = ".4g") -> str:
    """``format(v, spec)``, or :data:`MISSING`."""
    return format(v, spec) if finite(v) else MISSING


def pct(v: Any, spec: str = ".2f") -> str:
    """A fraction as a percentage (``0.0123`` -> ``"1.23%"``), or :data:`MISSING`."""
    return f"{format(100 * v, spec)}%" if finite(v) else MISSING


def interval(lower: Any, upper: Any, spec: str = "+.4g") -> str:
    """``[lower, upper]`` (signed by default: intervals of changes)."""
    return f"[{num(lower, spec)}, {num(upper, spec)}]"


def rounded(v: Any, digits: int = 6) -> float | None:
    """A finite number rounded to ``digits`` significant digits (for data shown in a
    page), else ``None``."""
    return float(f"{float(v):.{digits}g}") if finite(v) else None
