"""A deliberately naive reference of SPEC 16 (where a threshold fails).

Written from the SPEC text alone; it imports nothing from ``opis_cli``. Every
(query, gallery) pair is enumerated with explicit loops, distances are
float64 per SPEC 2 (cosine: each row divided by its float64 norm and rounded
to float32 once, ``d = 1 - <a, b>`` with the float32 products summed in
float64; l2: ``sqrt`` of the float64 sum of squared differences of the
float32 rows). Each sum is ``math.fsum`` (correctly rounded), so a pair and
its mirror, and two identical rows, get the same bits. O(N^2 D): small
inputs only (a few hundred rows).

``diagnose(...)`` returns the ``diagnosis`` document of SPEC 16 plus a few
extras that the tests compare too (the whole sparse ``A`` table, per-class
``FP``, the number of queries with ``P_q > 0``).
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np


def prepared_rows(x, metric: str) -> np.ndarray:
    """The float32 rows of SPEC 2 (normalised in float64, rounded once, for cosine)."""
    x32 = np.asarray(x, dtype=np.float32)
    if metric == "l2":
        return x32
    out = np.empty_like(x32)
    for i, row in enumerate(x32.astype(np.float64)):
        nrm = math.sqrt(math.fsum(v * v for v in row))
        out[i] = (row / nrm).astype(np.float32)
    return out


def distance(a: np.ndarray, b: np.ndarray, metric: str) -> float:
    """float64 distance of two prepared float32 rows (products exact in float64)."""
    a64 = [float(v) for v in a]
    b64 = [float(v) for v in b]
    if metric == "cosine":
        return 1.0 - math.fsum(u * v for u, v in zip(a64, b64))
    return math.sqrt(math.fsum((u - v) * (u - v) for u, v in zip(a64, b64)))


def diagnose(x, labels, t: float, *, metric: str = "cosine", is_query=None, is_gallery=None,
             k: int = 5, level: float = 0.5, min_class_rows: int = 2) -> dict:
    """SPEC 16 at threshold ``t``, by enumeration of every pair (small inputs)."""
    n = len(labels)
    lab = [str(v) for v in labels]
    isq = [True] * n if is_query is None else [bool(v) for v in is_query]
    isg = [True] * n if is_gallery is None else [bool(v) for v in is_gallery]
    xp = prepared_rows(x, metric)
    queries = [i for i in range(n) if isq[i]]
    gallery = [j for j in range(n) if isg[j]]
    d = {}
    for q in queries:
        for g in gallery:
            if q != g:
                d[q, g] = distance(xp[q], xp[g], metric)

    # SPEC 3 per-class counts, and per query row
    P = defaultdict(int)
    M = defaultdict(int)
    TP = defaultdict(int)
    A = defaultdict(int)   # (c, c') -> accepted negative pairs
    N = defaultdict(int)   # (c, c') -> pairs
    Pq, rejected, accepted_pos = {}, {}, {}
    nearest3, nearest_pos = {}, {}
    for q in queries:
        Pq[q] = rejected[q] = accepted_pos[q] = 0
        for g in gallery:
            if q == g:
                continue
            c, c2 = lab[q], lab[g]
            N[c, c2] += 1
            ok = d[q, g] <= t
            if c == c2:
                P[c] += 1
                Pq[q] += 1
                if ok:
                    TP[c] += 1
                    accepted_pos[q] += 1
                else:
                    rejected[q] += 1
            else:
                M[c] += 1
                if ok:
                    A[c, c2] += 1
        ranked = sorted((d[q, g], g) for g in gallery if g != q)
        nearest3[q] = [g for _, g in ranked[:3]]
        pos = [d[q, g] for g in gallery if g != q and lab[g] == lab[q]]
        nearest_pos[q] = min(pos) if pos else None
    out = _assemble(lab, isq, isg, xp, queries, t, k, level, min_class_rows, P, M, TP, A, N,
                    Pq, rejected, accepted_pos, nearest3, nearest_pos)
    out["_distances"] = d
    return out


def diagnose_blocked(x, labels, t: float, *, metric: str = "cosine", is_query=None,
                     is_gallery=None, k: int = 5, level: float = 0.5, min_class_rows: int = 2,
                     block: int = 256) -> dict:
    """The same document for real data (thousands of rows): float64 distances of
    the prepared rows by blocks of queries (numpy float64 products, not fsum:
    a pair within ~1e-15 of ``t`` could be decided otherwise; ``_near_t``
    counts the pairs within 1e-12 of ``t``, and ``_near_rank`` the rows whose
    3rd and 4th nearest are within 1e-12, so a caller can see there are none)."""
    n = len(labels)
    lab = [str(v) for v in labels]
    isq = np.ones(n, bool) if is_query is None else np.asarray(is_query, bool)
    isg = np.ones(n, bool) if is_gallery is None else np.asarray(is_gallery, bool)
    xp = prepared_rows(x, metric).astype(np.float64)
    queries = [int(q) for q in np.nonzero(isq)[0]]
    gallery = np.nonzero(isg)[0]
    names = sorted(set(lab))
    cid = {c: i for i, c in enumerate(names)}
    y = np.array([cid[v] for v in lab])
    yg = y[gallery]
    C = len(names)
    G = xp[gallery]
    gn = (G * G).sum(axis=1)
    P = defaultdict(int)
    M = defaultdict(int)
    TP = defaultdict(int)
    Acount = defaultdict(int)
    Pq, rejected, accepted_pos, nearest3, nearest_pos = {}, {}, {}, {}, {}
    ng_c = np.bincount(yg, minlength=C)
    near_t = near_rank = 0
    for s in range(0, len(queries), block):
        qs = np.asarray(queries[s:s + block])
        Q = xp[qs]
        if metric == "cosine":
            D = 1.0 - Q @ G.T
        else:
            D = np.sqrt(np.maximum((Q * Q).sum(axis=1)[:, None] + gn[None, :] - 2.0 * Q @ G.T,
                                   0.0))  # less accurate than cosine's 1 - <a, b>: see _near_t
        self_mask = qs[:, None] == gallery[None, :]
        D[self_mask] = np.inf
        near_t += int((np.abs(D - t) <= 1e-12).sum())
        for i, q in enumerate(qs.tolist()):
            row = D[i]
            c = y[q]
            same = (yg == c) & ~self_mask[i]
            ok = row <= t
            pq = int(same.sum())
            Pq[q] = pq
            accepted_pos[q] = int((ok & same).sum())
            rejected[q] = pq - accepted_pos[q]
            P[lab[q]] += pq
            M[lab[q]] += int((~same & ~self_mask[i]).sum())
            TP[lab[q]] += accepted_pos[q]
            neg_ok = ok & (yg != c)
            for c2, cnt in zip(*np.unique(yg[neg_ok], return_counts=True)):
                Acount[lab[q], names[c2]] += int(cnt)
            kth = np.partition(row, min(3, len(row) - 1))[:4]
            kth.sort()
            if len(row) >= 4 and kth[3] - kth[2] <= 1e-12:
                near_rank += 1
            cand = np.nonzero(row <= kth[min(2, len(kth) - 1)])[0]
            order = cand[np.lexsort((gallery[cand], row[cand]))]
            nearest3[q] = [int(gallery[j]) for j in order[:3] if np.isfinite(row[j])]
            nearest_pos[q] = float(row[same].min()) if pq else None
    N = {}
    nq_c = np.bincount(y[queries], minlength=C)
    for a in range(C):
        for b in range(C):
            if nq_c[a] and ng_c[b]:
                N[names[a], names[b]] = int(nq_c[a] * ng_c[b])
    A = defaultdict(int, Acount)
    out = _assemble(lab, list(isq), list(isg), xp.astype(np.float32), queries, t, k,
                    level, min_class_rows, P, M, TP, A, defaultdict(int, N), Pq, rejected,
                    accepted_pos, nearest3, nearest_pos)
    out["_near_t"] = near_t
    out["_near_rank"] = near_rank
    return out


def _assemble(lab, isq, isg, xp, queries, t, k, level, min_class_rows, P, M, TP, A, N, Pq,
              rejected, accepted_pos, nearest3, nearest_pos) -> dict:
    """The five answers of SPEC 16 from the per-pair counts (shared by both readers)."""
    n = len(lab)
    rows_of = defaultdict(int)
    for v in lab:
        rows_of[v] += 1
    evaluated = sorted(c for c in set(lab)
                       if P[c] > 0 and M[c] > 0 and rows_of[c] >= min_class_rows)
    FP = defaultdict(int)
    for (c, c2), a in A.items():
        FP[c] += a

    impostors = {}
    for c in evaluated:
        cand = [(c2, a) for (c1, c2), a in A.items() if c1 == c and a > 0]
        cand.sort(key=lambda e: (-e[1], e[0]))
        impostors[c] = [{"label": c2, "accepts": a, "far": a / N[c, c2], "share": a / FP[c]}
                        for c2, a in cand[:k]]

    # overlap of unordered label pairs
    all_labels = sorted(set(lab))
    tpr = {c: TP[c] / P[c] for c in all_labels if P[c] > 0}
    over = []
    for i, a in enumerate(all_labels):
        for b in all_labels[i + 1:]:
            den = N[a, b] + N[b, a]
            if den == 0:
                continue
            ov = (A[a, b] + A[b, a]) / den
            need = max([level] + [tpr[c] for c in (a, b) if c in tpr])
            if ov >= need:
                over.append({"a": a, "b": b, "overlap": ov, "accepts_ab": A[a, b],
                             "accepts_ba": A[b, a], "pairs_ab": N[a, b], "pairs_ba": N[b, a]})
    over.sort(key=lambda e: (-e["overlap"], -(e["pairs_ab"] + e["pairs_ba"]), e["a"], e["b"]))
    top = over[:20]
    tied = sum(1 for e in over if e["overlap"] == top[-1]["overlap"]) if len(over) > 20 else 0

    # duplicate groups (every row that takes part as query or gallery)
    groups = defaultdict(list)
    for i in range(n):
        if isq[i] or isg[i]:
            groups[tuple(float(v) + 0.0 for v in xp[i])].append(i)
    conflicting = [rows for rows in groups.values() if len({lab[r] for r in rows}) >= 2]
    shared = defaultdict(int)
    for rows in conflicting:
        labs = sorted({lab[r] for r in rows})
        for i, a in enumerate(labs):
            for b in labs[i + 1:]:
                shared[a, b] += 1
    dup_top = sorted(shared.items(), key=lambda e: (-e[1], e[0][0], e[0][1]))[:20]

    # rejected rows of evaluated classes
    rej = {}
    for c in evaluated:
        rows = [q for q in queries if lab[q] == c and Pq[q] > 0 and rejected[q] > 0]
        rows.sort(key=lambda q: (-rejected[q], q))
        rej[c] = [{"row": int(q), "rejected": rejected[q], "frr": rejected[q] / Pq[q]}
                  for q in rows[:3]]

    # suspects
    sus = []
    n_with_pos = 0
    for q in queries:
        if Pq[q] == 0:
            continue
        n_with_pos += 1
        near = nearest3[q]
        if len(near) < 3 or accepted_pos[q] > 0:
            continue
        labs = {lab[g] for g in near}
        if len(labs) == 1 and lab[q] not in labs:
            sus.append({"row": int(q), "label": lab[q], "looks_like": labs.pop(),
                        "nearest_positive": nearest_pos[q]})

    return {
        "threshold": t, "k": k, "level": level,
        "impostors": impostors,
        "overlap": {"count": len(over), "tied": tied, "top": top},
        "duplicates": {"groups": len(conflicting), "rows": sum(len(r) for r in conflicting),
                       "top": [{"a": a, "b": b, "shared": s} for (a, b), s in dup_top]},
        "rejected_rows": rej,
        "suspects": {"count": len(sus), "rows": sus},
        # extras for the tests
        "_A": {key: v for key, v in A.items() if v > 0},
        "_N": dict(N),
        "_FP": {c: FP[c] for c in all_labels},
        "_queries_with_positives": n_with_pos,
        "_evaluated": evaluated,
    }
