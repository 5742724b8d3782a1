"""Fairness of one threshold across classes or groups (SPEC 13). Pure numpy, no I/O.

For the evaluated rows ``i = 1..n`` (classes or groups) at a threshold, with
``FAR_i = FP_i / M_i``, ``FRR_i = FN_i / P_i`` and the global ``FAR``,
``FRR`` over all their pairs, and ``alpha`` = ``--fairness-alpha``:

- ``far_ratio = max FAR_i / FAR``, ``frr_ratio = max FRR_i / FRR`` (None when
  the denominator is 0);
- ``fdr = 1 - (alpha (max FAR_i - min FAR_i) + (1 - alpha) (max FRR_i - min FRR_i))``
  (de Freitas Pereira & Marcel);
- ``garbe = alpha G(FAR) + (1 - alpha) G(FRR)`` with the Gini coefficient
  ``G(x) = n / (n - 1) sum_i sum_j |x_i - x_j| / (2 n^2 mean(x))``, 0 when
  ``mean(x) = 0`` (Howard et al.); None when ``n = 1`` (``n / (n - 1)`` is
  undefined: SPEC 13 does not say, a group block may hold a single group);
- ``inequity_rate = (max FAR_i / min FAR_i)^alpha (max FRR_i / min FRR_i)^(1 - alpha)``,
  None when either minimum is 0.

Every quantity is computed at every grid threshold at once (columns of the
``(n, K)`` count matrices); ``fdr`` and ``garbe`` are also range-averaged
(SPEC 5) over the grid.
"""

from __future__ import annotations

import numpy as np

from ..results import Fairness, FairnessCurve
from .consistency import range_average


def _rates(tp, fp, P, M):
    tp = np.asarray(tp, np.float64)
    fp = np.asarray(fp, np.float64)
    P = np.asarray(P, np.float64)[:, None]
    M = np.asarray(M, np.float64)[:, None]
    fn = P - tp
    far = fp / M
    frr = fn / P
    gfar = fp.sum(axis=0) / M.sum()
    gfrr = fn.sum(axis=0) / P.sum()
    return far, frr, gfar, gfrr


def gini(x: np.ndarray) -> np.ndarray:
    """``G`` of SPEC 13 for each column of ``x`` (n, K); NaN when ``n < 2``.

    ``sum_i sum_j |x_i - x_j| = 2 sum_k (2k - n - 1) x_(k)`` over the
    ascending order statistics, so ``G = S / (2 (n - 1) sum_i x_i)``.
    """
    n = x.shape[0]
    if n < 2:
        return np.full(x.shape[1], np.nan)
    xs = np.sort(x, axis=0)
    w = (2.0 * np.arange(1, n + 1) - n - 1)[:, None]
    s = 2.0 * np.sum(w * xs, axis=0)
    total = x.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        g = np.where(total > 0, s / (2.0 * (n - 1) * np.where(total > 0, total, 1.0)), 0.0)
    return g


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1.0), np.nan)


def fairness_curves(tp, fp, P, M, alpha: float) -> dict[str, np.ndarray]:
    """Every SPEC 13 quantity at every threshold: ``{name: (K,) array}``.

    ``tp``/``fp`` are (n, K) counts of the evaluated rows, ``P``/``M`` (n,)
    their totals (all > 0). Nulls are NaN.
    """
    a = float(alpha)
    far, frr, gfar, gfrr = _rates(tp, fp, P, M)
    far_max, far_min = far.max(axis=0), far.min(axis=0)
    frr_max, frr_min = frr.max(axis=0), frr.min(axis=0)
    fdr = 1.0 - (a * (far_max - far_min) + (1.0 - a) * (frr_max - frr_min))
    garbe = a * gini(far) + (1.0 - a) * gini(frr)
    ok = (far_min > 0) & (frr_min > 0)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        ineq = np.where(ok, _ratio(far_max, far_min) ** a * _ratio(frr_max, frr_min) ** (1.0 - a),
                        np.nan)
    return {"far_ratio": _ratio(far_max, gfar), "frr_ratio": _ratio(frr_max, gfrr),
            "fdr": fdr, "garbe": garbe, "inequity_rate": ineq}


def _opt(v) -> float | None:
    v = float(v)
    return v if np.isfinite(v) else None


def fairness(tp, fp, P, M, thresholds: np.ndarray, index: int, alpha: float
             ) -> tuple[Fairness, FairnessCurve]:
    """SPEC 13 at grid index ``index`` (the recommended threshold) and over the grid."""
    c = fairness_curves(tp, fp, P, M, alpha)
    at = Fairness(alpha=float(alpha), far_ratio=_opt(c["far_ratio"][index]),
                  frr_ratio=_opt(c["frr_ratio"][index]), fdr=float(c["fdr"][index]),
                  garbe=_opt(c["garbe"][index]), inequity_rate=_opt(c["inequity_rate"][index]))
    th = np.asarray(thresholds, np.float64)
    has_garbe = bool(np.all(np.isfinite(c["garbe"])))
    curve = FairnessCurve(
        alpha=float(alpha), fdr_mean=float(range_average(c["fdr"], th)),
        garbe_mean=float(range_average(c["garbe"], th)) if has_garbe else None,
        fdr=tuple(float(v) for v in c["fdr"]),
        garbe=tuple(float(v) for v in c["garbe"]) if has_garbe else None)
    return at, curve
