"""The verification view (SPEC 14): EER, minDCF and FNMR at FMR. Pure numpy, no I/O.

Over a set of pairs with ``P`` positives and ``M`` negatives, ``FAR(t) =
FP(t) / M`` and ``FRR(t) = 1 - TP(t) / P`` are step functions of the
threshold that change only at pair distances (a pair is accepted when
``d <= t``), so every minimum over all real ``t`` is attained at a pair
distance or below every pair (reject everything: ``FAR = 0``, ``FRR = 1``):

- ``eer = min_t max(FAR, FRR)``, ``eer_threshold`` the smallest minimiser;
- ``min_dcf = min_t [c_miss p FRR + c_fa (1 - p) FAR] / min(c_miss p, c_fa (1 - p))``
  (NIST SRE normalisation), ``min_dcf_threshold`` the smallest minimiser;
- ``fnmr_at_fmr[F]`` for ``F * M >= 1``: the fraction of positives whose
  distance is not strictly below the ``(floor(F M) + 1)``-th smallest
  negative distance.

Where rejecting everything attains the minimum, the smallest minimiser is
``-inf`` and the threshold is reported as None (null). Costs within a
relative ``1e-12`` of the minimum count as attaining it (float rounding of
``a FRR + b FAR`` for different counts; the EER's values are single
correctly rounded fractions and compare exactly).

The engine supplies :class:`~opis_cli.engines.base.OperatingPoints`: exact
counts at every distance that can matter (``engines/verify.py``); the
functions here only read them.
"""

from __future__ import annotations

import numpy as np

from ..counts import FMR_LEVELS, fmr_key, fmr_rank
from ..results import Verification

#: relative tolerance of "attains the minimum cost"
COST_TIES = 1e-12
#: DET points are kept where the curve has moved this far in normal deviates
DET_STEP = 0.1
#: rates are drawn on normal-deviate axes between these (0 and 1 have no deviate)
DET_CLIP = 1e-7
#: groups with a DET curve in the result: the worst and the best by EER, this many each
DET_GROUPS = 4


def eer(pts) -> tuple[float, float | None]:
    """``(eer, eer_threshold)`` from operating points (threshold None: reject all)."""
    real = np.asarray(pts.real, bool)
    far = pts.fp[real] / pts.M
    frr = (pts.P - pts.tp[real]) / pts.P
    v = np.maximum(far, frr)
    best = min(1.0, float(v.min())) if len(v) else 1.0
    if best == 1.0:  # rejecting everything (FRR = 1) attains it, below every pair
        return best, None
    return best, float(pts.dist[real][int(np.argmax(v == best))])


def min_dcf(pts, p_target: float, c_miss: float, c_fa: float) -> tuple[float, float | None]:
    """``(min_dcf, min_dcf_threshold)``: the normalised minimum detection cost."""
    a, b = c_miss * p_target, c_fa * (1 - p_target)
    real = np.asarray(pts.real, bool)
    cost = a * ((pts.P - pts.tp[real]) / pts.P) + b * (pts.fp[real] / pts.M)
    best = min(a, float(cost.min())) if len(cost) else a
    norm = min(a, b)
    if a <= best * (1 + COST_TIES):  # rejecting everything attains it
        return best / norm, None
    i = int(np.argmax(cost <= best * (1 + COST_TIES)))
    return best / norm, float(pts.dist[real][i])


def fnmr_at_fmr(pts) -> dict[str, float]:
    """``{"1e-01": fnmr, ...}`` for the levels with ``F * M >= 1``."""
    out = {}
    for level in FMR_LEVELS:
        r = fmr_rank(level, pts.M)
        if r is None:
            continue
        i = int(np.argmax(pts.fp >= r))  # the point of the r-th negative distance
        below = int(pts.tp[i - 1]) if i > 0 else 0
        out[fmr_key(level)] = (pts.P - below) / pts.P
    return out


def det_points(pts, step: float = DET_STEP) -> tuple[tuple[float, float], ...]:
    """``(FAR, FRR)`` operating points for a DET curve, from the histograms
    behind ``pts`` (the threshold at every bin edge is exact), thinned to one
    point per ``step`` normal deviates of travel; () without histograms."""
    if pts.hist_pos is None:
        return ()
    from statistics import NormalDist

    busy = (pts.hist_pos + pts.hist_neg) > 0
    far = np.r_[0.0, (np.cumsum(pts.hist_neg) / pts.M)[busy]]
    frr = np.r_[1.0, ((pts.P - np.cumsum(pts.hist_pos)) / pts.P)[busy]]
    z = NormalDist().inv_cdf
    zx = [z(v) for v in np.clip(far, DET_CLIP, 1 - DET_CLIP)]
    zy = [z(v) for v in np.clip(frr, DET_CLIP, 1 - DET_CLIP)]
    keep = [0]
    for i in range(1, len(far)):
        j = keep[-1]
        if abs(zx[i] - zx[j]) >= step or abs(zy[i] - zy[j]) >= step or i == len(far) - 1:
            keep.append(i)
    return tuple((float(far[i]), float(frr[i])) for i in keep)


def verification(pts, dcf: tuple[float, float, float], groups=()) -> Verification:
    """The ``verification`` block of the result from the engine's points;
    ``groups`` are ``(label, points)`` of the groups, of which the
    ``DET_GROUPS`` worst and best by EER get a DET curve."""
    p, c_miss, c_fa = dcf
    e, et = eer(pts)
    d, dt = min_dcf(pts, p, c_miss, c_fa)
    ranked = sorted(((-eer(g)[0], lab, g) for lab, g in groups if g is not None),
                    key=lambda r: (r[0], r[1]))  # worst (largest EER) first, ties by label
    if len(ranked) > 2 * DET_GROUPS:
        ranked = ranked[:DET_GROUPS] + ranked[-DET_GROUPS:]
    return Verification(eer=e, eer_threshold=et, min_dcf=d, min_dcf_threshold=dt,
                        p_target=float(p), c_miss=float(c_miss), c_fa=float(c_fa),
                        fnmr_at_fmr=fnmr_at_fmr(pts), det=det_points(pts),
                        group_det=tuple((lab, det_points(g)) for _, lab, g in ranked))
