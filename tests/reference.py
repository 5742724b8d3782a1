"""A deliberately naive reference implementation of SPEC.md sections 2-7.

Written from SPEC.md alone (it imports nothing from ``opis_cli``) so that the
tests can compare the engine against an independent reading of the contract.
Everything is float64 numpy over the full N x N distance matrix, every
(query, gallery) pair is enumerated, and loops are used wherever they make the
rule easier to check by eye. Speed is not a goal; use it for small N only
(a few thousand rows at most).

Distances everywhere: smaller = more similar; a pair is accepted at
threshold ``t`` when ``d <= t``.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

PERCENTILES = (0, 5, 50, 95, 100)
SPREAD_KEYS = ("min", "p5", "p50", "p95", "max")
RETRIEVAL_KS = (1, 2, 4, 8)


# -- SPEC 2: distances ------------------------------------------------------
def distance_matrix(x, metric: str) -> np.ndarray:
    """Full (N, N) float64 distance matrix."""
    x = np.asarray(x, dtype=np.float64)
    if metric == "cosine":
        norms = np.sqrt((x * x).sum(axis=1))
        if np.any(norms == 0):
            raise ValueError("zero-norm row with the cosine metric")
        xn = x / norms[:, None]
        d = 1.0 - xn @ xn.T
        # one value per unordered pair, so that d(a, b) == d(b, a) bit for bit
        return np.triu(d) + np.triu(d, 1).T
    if metric == "l2":
        diff = x[:, None, :] - x[None, :, :]
        return np.sqrt((diff * diff).sum(axis=2))
    raise ValueError(f"unknown metric {metric!r}")


def distance_matrix_loops(x, metric: str) -> np.ndarray:
    """The same matrix with one explicit loop per pair (to check the above)."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    d = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            a, b = x[i], x[j]
            if metric == "cosine":
                a = a / np.sqrt((a * a).sum())
                b = b / np.sqrt((b * b).sum())
                d[i, j] = 1.0 - float((a * b).sum())
            else:
                d[i, j] = float(np.sqrt(((a - b) ** 2).sum()))
    return d


# -- small exact helpers ------------------------------------------------------
def exact_ceil(fraction: float, count: int) -> int:
    """``ceil(fraction * count)`` with ``fraction`` read as the decimal it prints as.

    ``0.1 * 70`` is ``7.000000000000001`` in binary floating point; the user
    who wrote ``--far-range 0.01:0.1`` or ``--epsilon 0.1`` means 1/10, so the
    product is computed exactly from the shortest decimal repr.
    """
    return math.ceil(Fraction(repr(float(fraction))) * count)


def range_average(v, t) -> float:
    """Trapezoidal integral of ``v`` over the grid ``t`` divided by the range width."""
    total = 0.0
    for k in range(len(t) - 1):
        total += (t[k + 1] - t[k]) * (v[k] + v[k + 1]) / 2.0
    return total / (t[-1] - t[0])


def utility_tpr_tnr(tp, fp, P, M, beta):
    b2 = beta * beta
    tpr = tp / P
    tnr = 1.0 - fp / M
    den = b2 * tnr + tpr
    return (1 + b2) * tpr * tnr / den if den != 0 else 0.0


def utility_precision_recall(tp, fp, P, M, beta):
    if tp == 0:
        return 0.0
    b2 = beta * beta
    fn = P - tp
    return (1 + b2) * tp / ((1 + b2) * tp + b2 * fn + fp)


UTILITY = {"tpr-tnr": utility_tpr_tnr, "precision-recall": utility_precision_recall}


# -- results ------------------------------------------------------------------
@dataclass
class RefBlock:
    """One consistency block (classes or groups)."""

    labels: list  # evaluated labels, in sorted-string order
    excluded_labels: list  # sorted strings
    P: dict
    M: dict
    TP: dict  # label -> (K,) int array
    FP: dict
    U: dict  # label -> (K,) float array
    n: dict  # label -> number of rows carrying the label
    queries: dict  # label -> number of query rows carrying the label
    ubar: np.ndarray
    opis: float
    epsilon_opis: float
    mean_utility: dict  # label -> range-average of U
    order: list  # evaluated labels by (mean utility, label)
    worst: list  # the set W, in ``order``
    worst_curve: np.ndarray  # mean U over W at each threshold
    opis_contribution: dict
    best_threshold: dict
    rec: dict  # recommended threshold and what it does there
    far_at: dict
    frr_at: dict
    recall_at_1: dict = field(default_factory=dict)  # label -> R@1 over its counted queries

    @property
    def evaluated(self) -> int:
        return len(self.labels)

    @property
    def excluded(self) -> int:
        return len(self.excluded_labels)


@dataclass
class RefResult:
    distances: np.ndarray
    thresholds: np.ndarray
    lower: float
    upper: float
    source: str
    far_lower: float
    far_upper: float
    classes: RefBlock
    groups: RefBlock | None
    retrieval: dict
    #: FAR-defined ends only: the ranks ``ceil(F * M)`` of the two order
    #: statistics and how many negative pairs lie at or below each end
    far_ranks: tuple[int, int] | None = None
    far_counts: tuple[int, int] | None = None


# -- SPEC 3: pairs and counts ------------------------------------------------
def pair_lists(d, keys, same, is_query, is_gallery):
    """For each key k: positive and negative distances of pairs whose query has key k.

    ``keys[q]`` is the class (or group) of row q; ``same[q, g]`` says whether
    the pair is positive.
    """
    n = len(keys)
    pos = {k: [] for k in sorted(set(keys))}
    neg = {k: [] for k in sorted(set(keys))}
    for q in range(n):
        if not is_query[q]:
            continue
        row = d[q]
        mask = is_gallery.copy()
        mask[q] = False  # never paired with itself
        pos[keys[q]].append(row[mask & same[q]])
        neg[keys[q]].append(row[mask & ~same[q]])
    cat = lambda parts: np.concatenate(parts) if parts else np.zeros(0)
    return ({k: cat(v) for k, v in pos.items()}, {k: cat(v) for k, v in neg.items()})


def count_accepted(dists: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Number of distances ``<= t`` for every grid threshold."""
    return np.array([int((dists <= t).sum()) for t in thresholds], dtype=np.int64)


# -- SPEC 5: calibration range -----------------------------------------------
def far_threshold(neg_sorted: np.ndarray, F: float) -> float:
    """``ceil(F * M)``-th smallest negative distance (1-based)."""
    M = len(neg_sorted)
    k = exact_ceil(F, M)
    k = min(max(k, 1), M)
    return float(neg_sorted[k - 1])


# -- SPEC 6: metrics over one block -------------------------------------------
def is_evaluated(P: int, M: int, rows: int | None, min_rows: int = 2) -> bool:
    """SPEC 3: at least one positive and one negative pair, and at least
    ``--min-class-rows`` rows carrying the label (query or gallery rows alike;
    ``rows`` None: not known to the caller, who works from counts alone).

    SPEC 3 says the default 2 "adds nothing": for a class, P > 0 already needs
    two rows; a *group* of one row can have positives (in other groups), so
    the row condition applies only from 3 on, as SPEC 3's default promises.
    """
    return P > 0 and M > 0 and (rows is None or min_rows <= 2 or rows >= min_rows)


def consistency_block(keys, pos, neg, thresholds, **options) -> RefBlock:
    """Counts from the pair distances of each key, then everything else from the counts."""
    P = {k: len(pos[k]) for k in pos}
    M = {k: len(neg[k]) for k in neg}
    rows, min_rows = options["n_rows"], options.get("min_rows", 2)
    evaluated = [k for k in sorted(pos) if is_evaluated(P[k], M[k], rows.get(k), min_rows)]
    TP = {k: count_accepted(pos[k], thresholds) for k in evaluated}
    FP = {k: count_accepted(neg[k], thresholds) for k in evaluated}
    return block_from_counts(keys, P, M, TP, FP, thresholds, **options)


def block_from_counts(keys, P, M, TP, FP, thresholds, *, utility, beta, epsilon, policy, n_rows,
                      n_queries, min_rows=2) -> RefBlock:
    """SPEC 4 and 6 from the per-key pair counts (``TP``/``FP`` of evaluated keys)."""
    all_keys = sorted(P)
    labels = [k for k in all_keys if is_evaluated(P[k], M[k], n_rows.get(k), min_rows)]
    excluded = [k for k in all_keys if k not in labels]
    # labels present in the data but never the class of a query pair
    excluded = sorted(set(excluded) | (set(keys) - set(all_keys)))
    t = np.asarray(thresholds, dtype=np.float64)
    K = len(t)
    C = len(labels)
    ufun = UTILITY[utility]
    U = {k: np.array([ufun(TP[k][i], FP[k][i], P[k], M[k], beta) for i in range(K)])
         for k in labels}
    ubar = np.array([sum(U[k][i] for k in labels) / C for i in range(K)])
    contrib = {k: range_average((U[k] - ubar) ** 2, t) / C for k in labels}
    opis = sum(range_average((U[k] - ubar) ** 2, t) for k in labels) / C
    mean_u = {k: range_average(U[k], t) for k in labels}
    order = sorted(labels, key=lambda k: (mean_u[k], k))
    n_worst = max(1, exact_ceil(epsilon, C))
    worst = order[:n_worst]
    rest = order[n_worst:]
    worst_curve = np.array([sum(U[k][i] for k in worst) / len(worst) for i in range(K)])
    if rest:
        rest_curve = np.array([sum(U[k][i] for k in rest) / len(rest) for i in range(K)])
        eps_opis = range_average((rest_curve - worst_curve) ** 2, t)
    else:
        eps_opis = 0.0

    # recommended threshold
    sumP = sum(P[k] for k in labels)
    sumM = sum(M[k] for k in labels)
    gtpr = np.array([sum(TP[k][i] for k in labels) / sumP for i in range(K)])
    gfar = np.array([sum(FP[k][i] for k in labels) / sumM for i in range(K)])
    requested = None
    if policy == "max-mean-utility":
        idx = first_argmax(ubar)
    elif policy == "max-worst-utility":
        idx = first_argmax(worst_curve)
    elif policy.startswith("far:"):
        requested = float(policy[4:])
        ok = [i for i in range(K) if gfar[i] <= requested]
        idx = max(ok) if ok else 0
    else:
        raise ValueError(policy)
    far_c = {k: FP[k][idx] / M[k] for k in labels}
    frr_c = {k: 1.0 - TP[k][idx] / P[k] for k in labels}
    far_vals = np.array([far_c[k] for k in labels])
    frr_vals = np.array([frr_c[k] for k in labels])
    rec = {
        "index": idx, "value": float(t[idx]), "mean_utility": float(ubar[idx]),
        "worst_mean_utility": float(worst_curve[idx]), "tpr": float(gtpr[idx]),
        "far": float(gfar[idx]), "frr": 1.0 - float(gtpr[idx]),
        "far_spread": dict(zip(SPREAD_KEYS, np.percentile(far_vals, PERCENTILES).tolist())),
        "frr_spread": dict(zip(SPREAD_KEYS, np.percentile(frr_vals, PERCENTILES).tolist())),
        "fraction_far_above_2x": sum(1 for v in far_vals if v > 2 * gfar[idx]) / C,
        "requested_far": requested, "global_far_curve": gfar, "global_tpr_curve": gtpr,
    }
    best = {k: float(t[first_argmax(U[k])]) for k in labels}
    return RefBlock(labels=labels, excluded_labels=excluded, P=P, M=M, TP=TP, FP=FP, U=U,
                    n={k: n_rows.get(k, 0) for k in set(keys)},
                    queries={k: n_queries.get(k, 0) for k in set(keys)}, ubar=ubar, opis=opis,
                    epsilon_opis=eps_opis, mean_utility=mean_u, order=order, worst=worst,
                    worst_curve=worst_curve, opis_contribution=contrib, best_threshold=best,
                    rec=rec, far_at=far_c, frr_at=frr_c)


def first_argmax(v) -> int:
    """Index of the maximum; ties go to the smallest index (smallest threshold)."""
    best = 0
    for i in range(1, len(v)):
        if v[i] > v[best]:
            best = i
    return best


# -- SPEC 6: retrieval ---------------------------------------------------------
def retrieval(d, labels, is_query, is_gallery, counted=None):
    """R@1/2/4/8, MAP@R (Musgrave et al. 2020) and R-Precision, and each query's R@1 hit.

    Neighbours of query q: gallery rows g != q, ordered by (distance, row).
    Only queries with at least one positive in the gallery count, and, when
    ``counted`` (a set of labels: the evaluated classes) is given, only
    queries whose label is in it (SPEC 3: an excluded class is in no average).
    R-Precision: the mean of (positives among the R nearest) / R.
    Returns (summary dict, {query row: 1.0 or 0.0}).
    """
    n = len(labels)
    hits = {k: 0 for k in RETRIEVAL_KS}
    ap_sum = 0.0
    rp_sum = 0.0
    first_hit = {}
    for q in range(n):
        if not is_query[q]:
            continue
        if counted is not None and labels[q] not in counted:
            continue
        cand = np.array([g for g in range(n) if is_gallery[g] and g != q], dtype=np.int64)
        rel = np.array([labels[g] == labels[q] for g in cand], dtype=bool)
        R = int(rel.sum())
        if R == 0:
            continue
        ranked = np.lexsort((cand, d[q, cand]))  # by distance, then by row
        rel_ranked = rel[ranked]
        for k in RETRIEVAL_KS:
            if rel_ranked[:k].any():
                hits[k] += 1
        found = 0
        precision_sum = 0.0
        for i in range(R):
            if rel_ranked[i]:
                found += 1
                precision_sum += found / (i + 1)
        ap_sum += precision_sum / R
        rp_sum += sum(1 for i in range(R) if rel_ranked[i]) / R
        first_hit[q] = 1.0 if rel_ranked[0] else 0.0
    nq = len(first_hit)
    if nq == 0:
        return ({"recall_at_k": {str(k): float("nan") for k in RETRIEVAL_KS},
                 "map_at_r": float("nan"), "r_precision": float("nan"), "queries": 0},
                first_hit)
    return ({"recall_at_k": {str(k): hits[k] / nq for k in RETRIEVAL_KS},
             "map_at_r": ap_sum / nq, "r_precision": rp_sum / nq, "queries": nq}, first_hit)


def recall_at_1_by(keys, first_hit) -> dict:
    """Mean R@1 hit over the counted queries of each key (class or group)."""
    out: dict = {}
    for q, hit in first_hit.items():
        out.setdefault(keys[q], []).append(hit)
    return {k: sum(v) / len(v) for k, v in out.items()}


# -- everything -------------------------------------------------------------------
def evaluate(embeddings, labels, *, groups=None, is_query=None, is_gallery=None,
             metric="cosine", far_range=(0.01, 0.1), calibration_range=None,
             num_thresholds=101, utility="tpr-tnr", beta=1.0, epsilon=0.1,
             threshold_policy="max-mean-utility", distances=None,
             min_class_rows=2) -> RefResult:
    """Reference result for SPEC.md sections 2-7 (same options as ``opis_cli.evaluate``)."""
    x = np.asarray(embeddings, dtype=np.float64)
    n = len(x)
    labels = [str(v) for v in labels]
    is_query = np.ones(n, bool) if is_query is None else np.asarray(is_query, bool)
    is_gallery = np.ones(n, bool) if is_gallery is None else np.asarray(is_gallery, bool)
    d = distance_matrix(x, metric) if distances is None else distances
    lab = np.array(labels, dtype=object)
    same = lab[:, None] == lab[None, :]

    pos, neg = pair_lists(d, labels, same, is_query, is_gallery)
    P = {k: len(pos[k]) for k in pos}
    M = {k: len(neg[k]) for k in neg}
    n_rows = {k: labels.count(k) for k in set(labels)}
    evaluated = [k for k in pos if is_evaluated(P[k], M[k], n_rows[k], min_class_rows)]
    all_neg = np.sort(np.concatenate([neg[k] for k in evaluated]))

    if isinstance(calibration_range, str):
        calibration_range = calibration_range.split(":")
    if isinstance(far_range, str):
        far_range = far_range.split(":")
    far_ranks = None
    if calibration_range is not None:
        lo, hi = (float(v) for v in calibration_range)
        source = "explicit"
    else:
        A, B = (float(v) for v in far_range)
        lo, hi = far_threshold(all_neg, A), far_threshold(all_neg, B)
        source = "far"
        far_ranks = tuple(min(max(exact_ceil(F, len(all_neg)), 1), len(all_neg)) for F in (A, B))
    if not lo < hi:
        raise ValueError(f"degenerate calibration range [{lo}, {hi}]")
    t = np.linspace(lo, hi, int(num_thresholds))
    far_lower = float((all_neg <= t[0]).sum()) / len(all_neg)
    far_upper = float((all_neg <= t[-1]).sum()) / len(all_neg)

    n_queries = {k: sum(1 for i in range(n) if labels[i] == k and is_query[i])
                 for k in set(labels)}
    opts = dict(utility=utility, beta=beta, epsilon=epsilon, policy=threshold_policy,
                min_rows=min_class_rows)
    cls = consistency_block(labels, pos, neg, t, n_rows=n_rows, n_queries=n_queries, **opts)

    grp = None
    if groups is not None:
        gkeys = [str(v) for v in groups]
        gpos, gneg = pair_lists(d, gkeys, same, is_query, is_gallery)
        g_rows = {k: gkeys.count(k) for k in set(gkeys)}
        g_queries = {k: sum(1 for i in range(n) if gkeys[i] == k and is_query[i])
                     for k in set(gkeys)}
        grp = consistency_block(gkeys, gpos, gneg, t, n_rows=g_rows, n_queries=g_queries, **opts)

    ret, first_hit = retrieval(d, labels, is_query, is_gallery, counted=set(evaluated))
    cls.recall_at_1 = recall_at_1_by(labels, first_hit)
    if grp is not None:
        grp.recall_at_1 = recall_at_1_by([str(v) for v in groups], first_hit)
    return RefResult(distances=d, thresholds=t, lower=lo, upper=hi, source=source,
                     far_lower=far_lower, far_upper=far_upper, classes=cls, groups=grp,
                     retrieval=ret, far_ranks=far_ranks,
                     far_counts=(int((all_neg <= t[0]).sum()), int((all_neg <= t[-1]).sum())))


# -- SPEC 13: fairness of one threshold ----------------------------------------
def fairness_at(far: list, frr: list, global_far: float, global_frr: float, alpha: float) -> dict:
    """SPEC 13 from per-row FAR_i, FRR_i and the global rates, literally (None = null)."""
    n = len(far)
    a = alpha

    def G(x):
        # G(x) = n / (n - 1) * sum_i sum_j |x_i - x_j| / (2 n^2 mean(x)); 0 when mean(x) = 0
        if n < 2:
            return None  # n / (n - 1) undefined: SPEC 13 is silent; opis reports null
        mean = sum(x) / n
        if mean == 0:
            return 0.0
        total = 0.0
        for i in range(n):
            for j in range(n):
                total += abs(x[i] - x[j])
        return n / (n - 1) * total / (2 * n * n * mean)

    gfar, gfrr = G(far), G(frr)
    out = {
        "alpha": a,
        "far_ratio": max(far) / global_far if global_far != 0 else None,
        "frr_ratio": max(frr) / global_frr if global_frr != 0 else None,
        "fdr": 1 - (a * (max(far) - min(far)) + (1 - a) * (max(frr) - min(frr))),
        "garbe": None if gfar is None else a * gfar + (1 - a) * gfrr,
        "inequity_rate": None if min(far) == 0 or min(frr) == 0 else
        (max(far) / min(far)) ** a * (max(frr) / min(frr)) ** (1 - a),
    }
    return out


def fairness_block(rb: RefBlock, thresholds, alpha: float) -> dict:
    """SPEC 13 of a reference block: at every grid threshold, at the recommended
    one, and ``fdr``/``garbe`` range-averaged (SPEC 5)."""
    labels = rb.labels
    sumP = sum(rb.P[k] for k in labels)
    sumM = sum(rb.M[k] for k in labels)
    per = []
    for i in range(len(thresholds)):
        far = [rb.FP[k][i] / rb.M[k] for k in labels]
        frr = [1.0 - rb.TP[k][i] / rb.P[k] for k in labels]
        gfar = sum(int(rb.FP[k][i]) for k in labels) / sumM
        gfrr = 1.0 - sum(int(rb.TP[k][i]) for k in labels) / sumP
        per.append(fairness_at(far, frr, gfar, gfrr, alpha))
    fdr = [p["fdr"] for p in per]
    garbe = [p["garbe"] for p in per]
    has_garbe = all(g is not None for g in garbe)
    return {"at": per[rb.rec["index"]], "fdr": fdr, "garbe": garbe if has_garbe else None,
            "fdr_mean": range_average(fdr, thresholds),
            "garbe_mean": range_average(garbe, thresholds) if has_garbe else None}


# -- SPEC 14: the verification view ----------------------------------------------
FMR_LEVELS = ((1e-1, "1e-01"), (1e-2, "1e-02"), (1e-3, "1e-03"), (1e-4, "1e-04"),
              (1e-5, "1e-05"), (1e-6, "1e-06"))


def verification_of(pos, neg, dcf=(0.01, 1.0, 1.0)) -> dict:
    """SPEC 14 from the positive and negative pair distances, literally.

    ``t`` runs over "below every pair" (FAR = 0, FRR = 1) and every distinct
    pair distance: FAR and FRR only change there, so every minimum over the
    real line is attained among them. A threshold that only "below every
    pair" attains has no smallest value (it would be -inf): None. Costs within
    a relative 1e-12 of the minimum count as attaining it (float rounding of
    ``a FRR + b FAR`` for different counts).
    """
    pos = sorted(float(v) for v in pos)
    neg = sorted(float(v) for v in neg)
    P, M = len(pos), len(neg)
    p, c_miss, c_fa = dcf
    a, b = c_miss * p, c_fa * (1 - p)
    ts = [None] + sorted(set(pos) | set(neg))  # None: below every pair
    eers, costs = [], []
    for t in ts:
        # pairs with d <= t: bisect on the sorted lists (a count by loop is too slow)
        tp = 0 if t is None else bisect.bisect_right(pos, t)
        fp = 0 if t is None else bisect.bisect_right(neg, t)
        far, frr = fp / M, (P - tp) / P
        eers.append(max(far, frr))
        costs.append(a * frr + b * far)
    e = min(eers)
    e_t = ts[eers.index(e)]
    c = min(costs)
    c_t = ts[next(i for i, v in enumerate(costs) if v <= c * (1 + 1e-12))]
    fnmr = {}
    for F, key in FMR_LEVELS:
        fm = Fraction(repr(F)) * M
        if fm >= 1:
            x = neg[math.floor(fm)]  # the (floor(F M) + 1)-th smallest
            fnmr[key] = sum(1 for d in pos if not d < x) / P
    return {"eer": e, "eer_threshold": e_t, "min_dcf": c / min(a, b),
            "min_dcf_threshold": c_t, "fnmr_at_fmr": fnmr}


def verification(embeddings, labels, *, groups=None, is_query=None, is_gallery=None,
                 metric="cosine", dcf=(0.01, 1.0, 1.0)) -> dict:
    """SPEC 14 over the pairs of the evaluated classes; with ``groups`` also
    ``group_eer``: each group's EER over the pairs whose query is in it (SPEC 7)."""
    x = np.asarray(embeddings, dtype=np.float64)
    n = len(x)
    labels = [str(v) for v in labels]
    is_query = np.ones(n, bool) if is_query is None else np.asarray(is_query, bool)
    is_gallery = np.ones(n, bool) if is_gallery is None else np.asarray(is_gallery, bool)
    d = distance_matrix(x, metric)
    lab = np.array(labels, dtype=object)
    same = lab[:, None] == lab[None, :]
    pos, neg = pair_lists(d, labels, same, is_query, is_gallery)
    ev = [k for k in pos if len(pos[k]) and len(neg[k])]
    out = verification_of(np.concatenate([pos[k] for k in ev]),
                          np.concatenate([neg[k] for k in ev]), dcf)
    if groups is not None:
        gkeys = [str(v) for v in groups]
        gpos, gneg = pair_lists(d, gkeys, same, is_query, is_gallery)
        out["group_eer"] = {k: verification_of(gpos[k], gneg[k], dcf)["eer"]
                            for k in gpos if len(gpos[k]) and len(gneg[k])}
    return out
