"""A deliberately naive SPEC 12 (threshold transfer), for the tests to check against.

Float64 distances of every pair of each side (a full matrix per side: small
inputs only), Python sorting, no shortcut shared with the fast path: the
fold assignment is written out again from SPEC 12, the order statistic from
SPEC 5, the counts from SPEC 3 and the spread from SPEC 6.
"""

from __future__ import annotations

import math
import zlib
from fractions import Fraction

import numpy as np


def folds_of(names, K: int, seed: int) -> dict:
    """SPEC 12: names sorted by (crc32(utf8(f"{seed}:{name}")), name), the i-th in fold i mod K."""
    uniq = sorted(set(str(n) for n in names))
    keyed = sorted(uniq, key=lambda n: (zlib.crc32(f"{seed}:{n}".encode()), n))
    return {n: i % K for i, n in enumerate(keyed)}


def distances(X: np.ndarray, metric: str) -> np.ndarray:
    X = np.asarray(X, np.float64)
    if metric == "cosine":
        X = X / np.linalg.norm(X, axis=1, keepdims=True)
        return 1.0 - X @ X.T
    sq = (X * X).sum(axis=1)
    return np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2.0 * X @ X.T, 0.0))


def side(D: np.ndarray, labels, rows, is_query, is_gallery):
    """Pairs of one side: per evaluated class, its positive and negative distances."""
    rows = list(rows)
    per = {}
    for q in rows:
        if not is_query[q]:
            continue
        c = str(labels[q])
        e = per.setdefault(c, ([], []))
        for g in rows:
            if g == q or not is_gallery[g]:
                continue
            (e[0] if str(labels[g]) == c else e[1]).append(D[q, g])
    return {c: (np.array(p), np.array(n)) for c, (p, n) in per.items() if p and n}


def order_stat(sorted_negs: np.ndarray, F: float) -> float:
    r = max(1, math.ceil(Fraction(repr(float(F))) * len(sorted_negs)))
    return float(sorted_negs[r - 1])


def spread(v) -> dict:
    q = np.percentile(np.asarray(v, np.float64), [0, 5, 50, 95, 100])
    return dict(zip(("min", "p5", "p50", "p95", "max"), (float(x) for x in q)))


def at(per: dict, t: float) -> dict:
    """Global and per-class rates of a side at threshold t (accept d <= t)."""
    tp = sum(int((p <= t).sum()) for p, _ in per.values())
    fp = sum(int((n <= t).sum()) for _, n in per.values())
    P = sum(len(p) for p, _ in per.values())
    M = sum(len(n) for _, n in per.values())
    far_c = {c: float((n <= t).sum() / len(n)) for c, (p, n) in per.items()}
    frr_c = {c: float(1 - (p <= t).sum() / len(p)) for c, (p, n) in per.items()}
    return {"far": fp / M, "tpr": tp / P, "far_c": far_c, "frr_c": frr_c, "M": M, "P": P}


def transfer_sides(D, labels, A_rows, B_rows, F, is_query, is_gallery, t_star=None,
                   t_oracle=None) -> dict:
    """One fold (SPEC 12) from the calibration rows A and the test rows B."""
    A = side(D, labels, A_rows, is_query, is_gallery)
    B = side(D, labels, B_rows, is_query, is_gallery)
    if t_star is None:
        t_star = order_stat(np.sort(np.concatenate([n for _, n in A.values()])), F)
    if t_oracle is None:
        t_oracle = order_stat(np.sort(np.concatenate([n for _, n in B.values()])), F)
    a, b, o = at(A, t_star), at(B, t_star), at(B, t_oracle)
    ref = F if F is not None else a["far"]
    far_c = np.array([b["far_c"][c] for c in sorted(B)])
    return {
        "calibration": {"classes": len({str(labels[r]) for r in A_rows}),
                        "evaluated_classes": len(A), "rows": len(list(A_rows)),
                        "threshold": t_star, "far": a["far"], "tpr": a["tpr"]},
        "test": {"classes": len({str(labels[r]) for r in B_rows}), "evaluated_classes": len(B),
                 "rows": len(list(B_rows)), "far": b["far"], "tpr": b["tpr"],
                 "far_spread": spread(far_c),
                 "frr_spread": spread([b["frr_c"][c] for c in sorted(B)]),
                 "fraction_far_above_2x": float(np.mean(far_c > 2 * ref)),
                 "oracle_threshold": t_oracle, "oracle_tpr": o["tpr"], "oracle_far": o["far"],
                 "per_class": {c: (b["far_c"][c], b["frr_c"][c]) for c in B}},
        "_sides": (A, B),
    }


def rows_of(labels, K: int, seed: int) -> np.ndarray:
    """``--split rows`` written out: each class's rows j sorted by (crc32("seed:label:j"), j),
    the m-th in fold (m + crc32("seed:label") mod K) mod K."""
    fold = np.zeros(len(labels), np.int64)
    for c in set(str(v) for v in labels):
        rows = [j for j in range(len(labels)) if str(labels[j]) == c]
        rows.sort(key=lambda j: (zlib.crc32(f"{seed}:{c}:{j}".encode()), j))
        o = zlib.crc32(f"{seed}:{c}".encode()) % K
        for m, j in enumerate(rows):
            fold[j] = (m + o) % K
    return fold


def transfer(X, labels, *, K=5, seed=0, F=0.01, metric="cosine", groups=None, is_query=None,
             is_gallery=None, rows=False) -> list[dict]:
    """Every fold of a K-fold split (by class, by group when ``groups`` is given, or by
    row within each class when ``rows``)."""
    n = len(labels)
    isq = np.ones(n, bool) if is_query is None else np.asarray(is_query, bool)
    isg = np.ones(n, bool) if is_gallery is None else np.asarray(is_gallery, bool)
    if rows:
        fold = rows_of(labels, K, seed)
    else:
        names = [str(v) for v in (groups if groups is not None else labels)]
        fmap = folds_of(names, K, seed)
        fold = np.array([fmap[v] for v in names])
    D = distances(X, metric)
    return [transfer_sides(D, labels, np.nonzero(fold != k)[0], np.nonzero(fold == k)[0], F,
                           isq, isg) for k in range(K)]


def near(per_sides, t: float, tol: float) -> int:
    """Pairs of the sides within ``tol`` of ``t``: how many counts float32
    rounding may move across it."""
    total = 0
    for per in per_sides:
        for p, n in per.values():
            total += int((np.abs(p - t) <= tol).sum() + (np.abs(n - t) <= tol).sum())
    return total


def group_rates(D, labels, groups, rows, t, is_query, is_gallery) -> dict:
    """Per group of a side at t: (far, frr) over the pairs of its query rows whose class
    is evaluated on the side; groups with a positive and a negative pair only."""
    evaluated = set(side(D, labels, rows, is_query, is_gallery))
    acc = {}
    for q in rows:
        if not is_query[q] or str(labels[q]) not in evaluated:
            continue
        e = acc.setdefault(str(groups[q]), [0, 0, 0, 0])  # P, M, TP, FP
        for g in rows:
            if g == q or not is_gallery[g]:
                continue
            same = str(labels[g]) == str(labels[q])
            e[0 if same else 1] += 1
            if D[q, g] <= t:
                e[2 if same else 3] += 1
    return {k: (fp / m, 1 - tp / p) for k, (p, m, tp, fp) in acc.items() if p and m}


def fitted_thresholds(D, labels, keys, F, is_query=None, is_gallery=None) -> tuple[float, dict]:
    """SPEC 11 written out: theta_G over the evaluated classes' negatives, and for every
    key value (class, group or centroid of the query row) the ceil(F * M_k)-th smallest
    distance among the negatives of its queries."""
    n = len(labels)
    isq = np.ones(n, bool) if is_query is None else np.asarray(is_query, bool)
    isg = np.ones(n, bool) if is_gallery is None else np.asarray(is_gallery, bool)
    evaluated = set(side(D, labels, range(n), isq, isg))
    glob, per = [], {}
    for q in range(n):
        if not isq[q]:
            continue
        negs = [D[q, g] for g in range(n) if g != q and isg[g] and str(labels[g]) != str(labels[q])]
        per.setdefault(str(keys[q]), []).extend(negs)
        if str(labels[q]) in evaluated:
            glob.extend(negs)
    theta = {k: order_stat(np.sort(np.array(v)), F) for k, v in per.items() if v}
    return order_stat(np.sort(np.array(glob)), F), theta
