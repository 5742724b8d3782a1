"""Intervals of an engine that samples pairs (SPEC 15). Pure numpy, no I/O.

The sampled engine (``engines/sampled.py``) splits its draws into ``G``
random groups and keeps each group's counts. Replicate ``g`` is the whole
estimate recomputed without group ``g`` (its own FAR range, grid, curves,
OPIS, threshold). From the replicates ``theta_(g)`` and the full estimate
``theta``, the delete-a-group jackknife gives

* the variance ``v = (1 - f) (G - 1) / G sum_g (theta_(g) - mean_g theta_(g))^2``,
  with ``f = S / ng`` the sampling fraction (the finite population correction:
  0 when every pair is drawn);
* for OPIS and epsilon-OPIS, a **bias correction**. Noise in each class's
  curve adds its variance to the spread across classes: with ``D_c(t) =
  U_c(t) - Ubar(t)``, ``E[D_hat^2] = D^2 + Var(D_hat)``, so the plug-in OPIS
  is too high by the range-average of ``Var(D_hat_c(t))``, averaged over
  classes. That variance is estimated point by point from the replicates
  on the main grid (the count noise alone, without the range's shift) and
  subtracted (likewise ``Var`` of the gap ``mean_R U - mean_W U`` for
  epsilon-OPIS, with the full estimate's worst set). Quenouille's jackknife
  bias estimate ``(G - 1)(mean_g theta_(g) - theta)`` was tried first: it is
  far noisier (a difference of two nearly equal numbers) and moved the
  estimate the wrong way on the measured sets;
* the interval ``theta_c +- t_{G-1} sqrt(v)`` around the corrected value
  (Student's t with ``G - 1`` degrees of freedom, since ``v`` rests on ``G``
  replicates).

The recommended threshold is an argmax over the grid, not a smooth function
of the counts: its interval is the span of the grid thresholds whose score
(mean utility, worst-group utility, or the global FAR for ``far:F``) cannot be
told from the chosen one's at this level (jackknife interval of the
difference), widened by the jackknife interval of those grid points' own
positions. R@1 and MAP@R come from a simple random sample of queries: a
Wilson interval (R@1) and a t interval (MAP@R), both with the finite
population correction.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from .. import counts
from ..results import ConsistencyBlock, Estimate
from .consistency import consistency, range_average
from .threshold import Policy, global_far
from .utility import utility as utility_curves

#: two-sided 97.5% quantiles of Student's t by degrees of freedom (1..30)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
#: the level of every interval (SPEC 15)
CONFIDENCE = 0.95
_Z975 = 1.959963984540054


def t975(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom."""
    return _T975[df - 1] if df <= len(_T975) else _Z975


def _jack(full: float, reps: np.ndarray, fpc: float) -> tuple[float, float]:
    """``(mean of the replicates, jackknife standard error)``."""
    G = len(reps)
    if np.ptp(reps) == 0:  # e.g. an explicit range: no sampling noise at all
        return float(reps[0]), 0.0
    m = float(np.mean(reps))
    v = fpc * (G - 1) / G * float(np.sum((reps - m) ** 2))
    return m, math.sqrt(max(v, 0.0))


def estimate(rep, labels, P: np.ndarray, M: np.ndarray, *, kind: str, beta: float,
             epsilon: float, policy: Policy, full: dict, first_rank: np.ndarray,
             ap_at_r: np.ndarray, n_relevant: np.ndarray, hits_at_r: np.ndarray | None = None,
             rows: np.ndarray | None = None, min_rows: int = 2) -> Estimate:
    """The ``estimate`` block of a sampled result.

    Parameters
    ----------
    rep : the engine's ``Replicates``
    labels, P, M : class labels and pair counts (C,) of every class
    kind, beta, epsilon, policy : the evaluation's options
    full : the full estimate's ``opis``, ``epsilon_opis``, ``lower``, ``upper``,
        ``threshold`` (value), ``index`` (grid index of the threshold),
        ``score`` (K,) the policy's curve and ``grid`` (K,)
    first_rank, ap_at_r, n_relevant, hits_at_r : per-query retrieval arrays
        (sampled queries have ``n_relevant > 0``)
    rows, min_rows : rows per class and ``--min-class-rows`` (SPEC 3), so that
        the evaluated classes are the class block's
    """
    G = rep.n
    fpc = rep.fpc
    tq = t975(G - 1)
    ev = counts.evaluated(P, M, rows, min_rows)
    idx = np.nonzero(ev)[0]
    lab = [labels[i] for i in idx]
    Pe, Me = P[idx], M[idx]
    every = len(idx) == len(P)  # no copies of the (C, K) curves when all are evaluated
    r_opis, r_eps, r_lo, r_hi, r_score, r_grid = [], [], [], [], [], []
    worst = full["worst"]
    grid = np.asarray(full["grid"], np.float64)
    # jackknife variance of each class's deviation U_c - Ubar and of the gap
    # mean_R U - mean_W U, point by point (the noise that biases OPIS upwards)
    sum_d = sum_d2 = 0.0
    sum_e = sum_e2 = 0.0
    for g in range(G):
        th, tp, fp = rep.curves(g, P, M)
        if not every:
            tp, fp = tp[idx], fp[idx]
        U = utility_curves(tp, fp, Pe, Me, kind=kind, beta=beta)
        cons = consistency(U, th, lab, epsilon)
        # the noise of the counts alone: the replicate on the main grid
        tp0, fp0 = rep.fixed_curves(g)
        if not every:
            tp0, fp0 = tp0[idx], fp0[idx]
        U0 = utility_curves(tp0, fp0, Pe, Me, kind=kind, beta=beta)
        del tp0, fp0
        dev = U0 - U0.mean(axis=0)
        sum_d = sum_d + dev
        sum_d2 = sum_d2 + dev * dev
        if (~worst).any():
            gap = U0[~worst].mean(axis=0) - U0[worst].mean(axis=0)
            sum_e = sum_e + gap
            sum_e2 = sum_e2 + gap * gap
        r_opis.append(cons.opis)
        r_eps.append(cons.epsilon_opis)
        r_lo.append(th[0])
        r_hi.append(th[-1])
        r_grid.append(th)
        if policy.name == "far":
            r_score.append(global_far(fp, Me))
        else:
            r_score.append(cons.mean_curve if policy.name == "max-mean-utility"
                           else cons.worst_curve)
    intervals: dict[str, list[float]] = {}
    corrected: dict[str, float] = {}
    jv = fpc * (G - 1) / G
    var_d = jv * np.maximum(sum_d2 - sum_d * sum_d / G, 0.0)
    var_e = jv * np.maximum(np.asarray(sum_e2 - sum_e * sum_e / G), 0.0)
    bias = {"opis": float(np.mean(range_average(var_d, grid))),
            "epsilon_opis": float(range_average(var_e, grid)) if np.ndim(var_e) else 0.0}
    for name, reps in (("opis", r_opis), ("epsilon_opis", r_eps)):
        _, se = _jack(full[name], np.asarray(reps), fpc)
        val = max(full[name] - bias[name], 0.0)
        corrected[name] = val
        intervals[name] = [max(0.0, val - tq * se), val + tq * se]
    for name, reps in (("calibration_range.lower", r_lo), ("calibration_range.upper", r_hi)):
        key = name.split(".")[1]
        _, se = _jack(full[key], np.asarray(reps), fpc)
        intervals[name] = [full[key] - tq * se, full[key] + tq * se]
    intervals["recommended_threshold.value"] = _threshold_interval(
        policy, full, np.asarray(r_score), np.asarray(r_grid), fpc, tq)
    f_q = _retrieval_intervals(intervals, rep.retrieval_population, first_rank, ap_at_r,
                               n_relevant, hits_at_r)
    plug_in = {"opis": full["opis"], "epsilon_opis": full["epsilon_opis"]}
    return Estimate(
        method=rep.method, parameters=dict(rep.parameters), seed=int(rep.seed),
        confidence=CONFIDENCE,
        intervals={k: (float(v[0]), float(v[1])) for k, v in intervals.items()},
        plug_in=plug_in, corrected=corrected,
        sampling_fraction=1.0 - fpc, retrieval_fraction=f_q)


def _retrieval_intervals(intervals: dict, population: int, first_rank: np.ndarray,
                         ap_at_r: np.ndarray, n_relevant: np.ndarray,
                         hits_at_r: np.ndarray | None) -> float:
    """Add to ``intervals`` those of R@1 (Wilson), MAP@R and R-Precision (t
    intervals of a mean) over the sampled queries (``n_relevant > 0``) of a
    ``population`` of queries; returns the fraction sampled."""
    has = n_relevant > 0
    n = int(has.sum())
    N = max(int(population), n)
    f_q = n / N if N else 1.0
    if n:
        p = float(np.mean(first_rank[has] == 1))
        intervals["recall_at_k.1"] = _wilson(p, n, 1.0 - f_q)
        intervals["map_at_r"] = _mean_interval(ap_at_r[has], f_q)
        if hits_at_r is not None:
            intervals["r_precision"] = _mean_interval(hits_at_r[has] / n_relevant[has], f_q)
    return f_q


def _mean_interval(values: np.ndarray, f_q: float) -> list[float]:
    """The t interval of the mean of ``values``, a sample of a fraction ``f_q``
    of its population (finite-population correction ``1 - f_q``)."""
    n = len(values)
    mu = float(np.mean(values))
    se = float(np.std(values, ddof=1)) / math.sqrt(n) * math.sqrt(max(1.0 - f_q, 0.0)) \
        if n > 1 else 0.0
    return [mu - t975(max(n - 1, 1)) * se, mu + t975(max(n - 1, 1)) * se]


def _wilson(p: float, n: int, fpc: float) -> list[float]:
    """Wilson score interval of a proportion from ``n`` draws, variance times ``fpc``."""
    if fpc <= 0:
        return [p, p]
    n_eff = n / fpc
    z = _Z975
    den = 1 + z * z / n_eff
    mid = (p + z * z / (2 * n_eff)) / den
    half = z * math.sqrt(p * (1 - p) / n_eff + z * z / (4 * n_eff * n_eff)) / den
    return [max(0.0, mid - half), min(1.0, mid + half)]


def _threshold_interval(policy: Policy, full: dict, r_score: np.ndarray, r_grid: np.ndarray,
                        fpc: float, tq: float) -> list[float]:
    """The span of grid thresholds the chosen one cannot be told from (module docstring)."""
    G = len(r_score)
    k0 = int(full["index"])
    score = np.asarray(full["score"], np.float64)
    grid = np.asarray(full["grid"], np.float64)
    K = len(grid)

    def se_of(full_v: np.ndarray, reps: np.ndarray) -> np.ndarray:
        m = reps.mean(axis=0)
        return np.sqrt(fpc * (G - 1) / G * ((reps - m) ** 2).sum(axis=0))

    if policy.name == "far":
        se = se_of(score, r_score)
        ok_hi = np.nonzero(score - tq * se <= policy.far)[0]
        ok_lo = np.nonzero(score + tq * se <= policy.far)[0]
        lo_i = int(ok_lo[-1]) if len(ok_lo) else 0
        hi_i = int(ok_hi[-1]) if len(ok_hi) else 0
        lo_i, hi_i = min(lo_i, k0), max(hi_i, k0)
    else:
        d = score[k0] - score
        rd = r_score[:, [k0]] - r_score
        se = se_of(d, rd)
        inside = np.nonzero(d <= tq * se)[0]
        lo_i, hi_i = int(min(inside.min(), k0)), int(max(inside.max(), k0))
    se_t = se_of(grid, r_grid)
    lo_i, hi_i = max(0, lo_i), min(K - 1, hi_i)
    return [float(grid[lo_i] - tq * se_t[lo_i]), float(grid[hi_i] + tq * se_t[hi_i])]


def attach(classes: ConsistencyBlock, out, labels, P: np.ndarray, M: np.ndarray, *, kind: str,
           beta: float, epsilon: float, policy: Policy, rows: np.ndarray | None = None,
           min_rows: int = 2) -> tuple[ConsistencyBlock, Estimate]:
    """The class block with bias-corrected OPIS and epsilon-OPIS, and the
    ``estimate`` block, of an engine output that carries replicates
    (``rows``, ``min_rows``: SPEC 3's ``--min-class-rows``)."""
    ev = counts.evaluated(P, M, rows, min_rows)
    rt = classes.recommended_threshold
    grid = np.asarray(out.thresholds, np.float64)
    if policy.name == "far":
        score = global_far(out.class_fp[ev], M[ev])
    elif policy.name == "max-mean-utility":
        score = np.asarray(classes.mean_utility)
    else:
        score = np.asarray(classes.worst_mean_utility)
    full = {"opis": classes.opis, "epsilon_opis": classes.epsilon_opis,
            "worst": consistency(classes.curves.utility, grid, list(classes.curves.labels),
                                 epsilon).worst,
            "lower": float(grid[0]), "upper": float(grid[-1]), "threshold": rt.value,
            "index": rt.index, "score": score, "grid": grid}
    est = estimate(out.replicates, labels, P, M, kind=kind, beta=beta, epsilon=epsilon,
                   policy=policy, full=full, first_rank=out.first_rank, ap_at_r=out.ap_at_r,
                   n_relevant=out.n_relevant, hits_at_r=out.hits_at_r, rows=rows,
                   min_rows=min_rows)
    classes = replace(classes, opis=est.corrected["opis"],
                      epsilon_opis=est.corrected["epsilon_opis"])
    return classes, est
