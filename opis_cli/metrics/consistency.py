"""OPIS, epsilon-OPIS and retrieval accuracy (SPEC 5-6). Pure numpy, no I/O.

Reference: Zhang et al., "Threshold-Consistent Margin Loss for Open-World
Deep Metric Learning", ICLR 2024 (arXiv 2307.04047).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..counts import ceil_rank
from ..results import Retrieval

RECALL_KS = (1, 2, 4, 8)


# NumPy 2 renamed np.trapz to np.trapezoid (same code); pyproject allows NumPy 1.26.
_trapezoid = getattr(np, "trapezoid", None) or np.trapz


def range_average(v: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Trapezoidal integral of ``v`` over the grid divided by its width (last axis)."""
    width = thresholds[-1] - thresholds[0]
    return _trapezoid(v, thresholds, axis=-1) / width


def worst_count(epsilon: float, n: int) -> int:
    """Size of the worst set W of epsilon-OPIS: ``ceil(epsilon * n)``, at least 1."""
    return ceil_rank(epsilon, n)


@dataclass(frozen=True)
class Consistency:
    """OPIS and its parts for one set of curves (classes or groups).

    Attributes
    ----------
    opis : mean over rows of the range-average of ``(U_c - Ubar)^2``
    epsilon_opis : range-average of ``(mean_R U - mean_W U)^2`` (0 if R empty)
    mean_curve : (K,) ``Ubar(t)``
    worst_curve : (K,) mean utility of the worst group W
    mean_utility : (C,) range-average of each ``U_c``
    contribution : (C,) each row's share of OPIS (they sum to ``opis``)
    worst : (C,) bool, membership of W
    order : (C,) rows sorted by mean utility ascending, ties by label
    """

    opis: float
    epsilon_opis: float
    mean_curve: np.ndarray
    worst_curve: np.ndarray
    mean_utility: np.ndarray
    contribution: np.ndarray
    worst: np.ndarray
    order: np.ndarray


def consistency(U: np.ndarray, thresholds: np.ndarray, labels, epsilon: float) -> Consistency:
    """OPIS and epsilon-OPIS of curves ``U`` (C, K) of evaluated rows (SPEC 6).

    ``labels`` are the row labels (strings), used only to break ties in the
    mean-utility ordering.
    """
    C = U.shape[0]
    ubar = U.mean(axis=0)
    per_row = range_average((U - ubar) ** 2, thresholds)
    contrib = per_row / C
    opis = float(np.mean(per_row))
    mean_u = range_average(U, thresholds)
    # ascending mean utility, ties by label string (lexsort: last key is primary)
    order = np.lexsort((np.asarray(labels, dtype=str), mean_u)).astype(np.int64)
    nw = worst_count(epsilon, C)
    worst = np.zeros(C, bool)
    worst[order[:nw]] = True
    w_curve = U[worst].mean(axis=0)
    if nw < C:
        r_curve = U[~worst].mean(axis=0)
        eps_opis = float(range_average((r_curve - w_curve) ** 2, thresholds))
    else:
        eps_opis = 0.0
    return Consistency(opis=opis, epsilon_opis=eps_opis, mean_curve=ubar, worst_curve=w_curve,
                       mean_utility=mean_u, contribution=contrib, worst=worst, order=order)


def retrieval(first_rank: np.ndarray, ap_at_r: np.ndarray, n_relevant: np.ndarray,
              hits_at_r: np.ndarray | None = None) -> Retrieval:
    """Aggregate per-query ranks into R@k (k = 1, 2, 4, 8), MAP@R and R-Precision.

    ``first_rank`` is the 1-based rank of the nearest positive, ``ap_at_r``
    the per-query average precision at R = ``n_relevant`` (Musgrave et al.
    2020), ``hits_at_r`` the positives among the R nearest (R-Precision =
    mean of ``hits_at_r / R``; None when the engine did not measure it).
    Queries with ``n_relevant == 0`` are left out.
    """
    has = n_relevant > 0
    q = int(has.sum())
    if q == 0:
        return Retrieval({str(k): float("nan") for k in RECALL_KS}, float("nan"), 0,
                         None if hits_at_r is None else float("nan"))
    fr = first_rank[has]
    rk = {str(k): float(np.count_nonzero(fr <= k) / q) for k in RECALL_KS}
    rp = None
    if hits_at_r is not None:
        rp = float(np.sum(hits_at_r[has] / n_relevant[has]) / q)
    return Retrieval(rk, float(np.sum(ap_at_r[has]) / q), q, rp)
