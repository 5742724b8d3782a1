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


def metric_label(key: str) -> str:
    """A metric as people read it (the metrics registry's name: ``10%-OPIS`` for
    ``epsilon_opis``); the key itself where the registry has no name for it."""
    from ..metrics.registry import BY_KEY

    entry = BY_KEY.get(key)
    return entry.name if entry is not None and entry.name else key


def metric_row_label(key: str) -> str:
    """The name, then the key that ``--max`` / ``--min`` take when it differs:
    ``10%-OPIS (epsilon_opis)``, ``OPIS``."""
    name = metric_label(key)
    return name if name.lower() == key.lower() else f"{name} ({key})"


def mode_text(cmp) -> str:
    """How a :class:`~opis_cli.gate.compare.Comparison` measured its sides, in words."""
    if cmp.mode == "own-range":
        return "each on its own FAR range"
    return "same thresholds" if cmp.same_thresholds else "different thresholds"


def deployment_rows(dep) -> list[tuple[str, str, str]]:
    """The deployment view's rows as text: ``(quantity, baseline, candidate)``.

    ``dep`` is a :class:`~opis_cli.gate.compare.Deployment` with both sides.
    """
    b, c = dep.baseline, dep.candidate
    rows = [("global FAR", pct(b.far), pct(c.far)), ("global TPR", pct(b.tpr), pct(c.tpr))]
    for rate in ("far", "frr"):
        bs, cs = getattr(b, f"{rate}_spread"), getattr(c, f"{rate}_spread")
        rows += [(f"class {rate.upper()} {p}", pct(getattr(bs, p)), pct(getattr(cs, p)))
                 for p in ("min", "p5", "p50", "p95", "max")]
    rows += [("classes with FAR > 2x global", pct(b.fraction_far_above_2x, ".0f"),
              pct(c.fraction_far_above_2x, ".0f")),
             ("mean utility", num(b.mean_utility), num(c.mean_utility))]
    return rows


def deployment_title(dep) -> str:
    """``Deployment view: both models at threshold 0.6053 (baseline recommended)``."""
    return (f"Deployment view: both models at threshold {num(dep.threshold, '.4g')} "
            f"({dep.source})")


#: the words shown for a rate read at two different thresholds (FAR, FRR, TPR at
#: each model's own recommended threshold), by the comparison's verdict of the
#: (FAR, FRR) point: a difference there is a change of operating point, not an
#: improvement of the rate
POINT_WORDS = {"better": "lower FAR and FRR", "worse": "higher FAR and FRR",
               "": "trade-off", "same": "same"}
#: those rates (the same names as ``opis_cli.gate.compare.AT_OWN_THRESHOLD``,
#: which judges them; not imported, so render never imports gate.compare)
AT_OWN_THRESHOLD = ("tpr", "far", "frr")


def change_word(cmp, m) -> str:
    """How a headline metric's change is shown (terminal, Markdown, HTML).

    ``m.verdict`` except for FAR, FRR and TPR when the two recommended
    thresholds differ: those rates trade off along the threshold, so the row
    names the operating point's change (``lower FAR and FRR``, ``trade-off``)
    rather than calling a lower FAR "better".
    """
    if m.name not in AT_OWN_THRESHOLD:
        return m.verdict
    th = next((x for x in cmp.metrics if x.name == "threshold"), None)
    if th is None or th.baseline == th.candidate:
        return m.verdict
    return POINT_WORDS.get(m.verdict, m.verdict)
