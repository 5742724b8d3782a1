"""Recommended global threshold and the per-class spread at it (SPEC 6).

Pure numpy, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from ..results import OperatingPoint, RecommendedThreshold, Spread

SPREAD_POINTS = (("min", 0.0), ("p5", 5.0), ("p50", 50.0), ("p95", 95.0), ("max", 100.0))


@dataclass(frozen=True)
class Policy:
    """A threshold policy: ``max-mean-utility``, ``max-worst-utility`` or ``far:F``."""

    name: str
    far: float | None = None

    @classmethod
    def parse(cls, text: str) -> "Policy":
        text = text.strip()
        if text in ("max-mean-utility", "max-worst-utility"):
            return cls(text)
        if text.startswith("far:"):
            try:
                f = float(text[4:])
            except ValueError:
                f = float("nan")
            if not (0.0 <= f <= 1.0):
                raise ConfigError(
                    f"--threshold-policy {text}: F must be a number in [0, 1], e.g. far:0.05")
            return cls("far", f)
        raise ConfigError(
            f"--threshold-policy {text!r}: expected max-mean-utility, max-worst-utility or far:F")

    def __str__(self) -> str:
        return f"far:{self.far:g}" if self.name == "far" else self.name


def spread_of(values: np.ndarray) -> Spread:
    """min, 5th, 50th, 95th percentile (numpy's default linear rule) and max."""
    if len(values) == 0:
        return Spread(*(float("nan"),) * 5)
    q = np.percentile(values, [p for _, p in SPREAD_POINTS])
    return Spread(*(float(v) for v in q))


def global_far(fp: np.ndarray, M: np.ndarray) -> np.ndarray:
    """Global FAR at every threshold: ``sum_c FP_c(t) / sum_c M_c``."""
    return fp.sum(axis=0) / M.sum()


def class_rates(tp: np.ndarray, fp: np.ndarray, P: np.ndarray, M: np.ndarray,
                index: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-row FAR ``FP_c / M_c`` and FRR ``1 - TP_c / P_c`` at grid index ``index``.

    ``tp``/``fp`` are (C, K) counts, ``P``/``M`` (C,) totals (all > 0).
    """
    return fp[:, index] / M, 1.0 - tp[:, index] / P


def recommend(policy: Policy, thresholds: np.ndarray, mean_curve: np.ndarray,
              worst_curve: np.ndarray, tp: np.ndarray, fp: np.ndarray,
              P: np.ndarray, M: np.ndarray) -> RecommendedThreshold:
    """Pick the grid threshold of ``policy`` and describe the operating point.

    ``tp``/``fp`` are (C, K) counts of evaluated rows, ``P``/``M`` their totals.
    Ties go to the smallest threshold (``argmax`` returns the first maximum).
    The per-row rates at the chosen index are :func:`class_rates`.
    """
    gfar = global_far(fp, M)
    if policy.name == "max-mean-utility":
        k = int(np.argmax(mean_curve))
    elif policy.name == "max-worst-utility":
        k = int(np.argmax(worst_curve))
    else:
        ok = np.nonzero(gfar <= policy.far)[0]
        k = int(ok[-1]) if len(ok) else 0
    per_far, per_frr = class_rates(tp, fp, P, M, k)
    g = float(gfar[k])
    return RecommendedThreshold(
        policy=str(policy), value=float(thresholds[k]), index=k,
        mean_utility=float(mean_curve[k]), worst_mean_utility=float(worst_curve[k]),
        tpr=float(tp[:, k].sum() / P.sum()), far=g,
        far_spread=spread_of(per_far), frr_spread=spread_of(per_frr),
        fraction_far_above_2x=float(np.mean(per_far > 2 * g)),
        requested_far=policy.far)


def operating_point(threshold: float, tp: np.ndarray, fp: np.ndarray, P: np.ndarray,
                    M: np.ndarray, utility: np.ndarray | None = None) -> OperatingPoint:
    """The operating point of one global threshold from its per-class counts.

    ``tp``/``fp`` (C,) are the counts of pairs with distance ``<= threshold``
    of the evaluated classes, ``P``/``M`` (C,) their totals (all > 0);
    ``utility`` (C,) optionally their utilities there (``Ubar`` is their mean).
    Same definitions as :func:`recommend` (SPEC 6).
    """
    tp, fp = np.asarray(tp, np.float64), np.asarray(fp, np.float64)
    per_far, per_frr = fp / M, 1.0 - tp / P
    g = float(fp.sum() / M.sum())
    return OperatingPoint(
        threshold=float(threshold), tpr=float(tp.sum() / P.sum()), far=g,
        far_spread=spread_of(per_far), frr_spread=spread_of(per_frr),
        fraction_far_above_2x=float(np.mean(per_far > 2 * g)),
        mean_utility=None if utility is None else float(np.mean(utility)))
