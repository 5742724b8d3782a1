"""Where a threshold fails (SPEC 16): one exact pass over every pair at one threshold.

Queries are processed in tiles of ``base.tile_rows(ng)`` rows against the
whole gallery: one float32 BLAS product per tile (``base.inner_products``),
then a compiled kernel (``_diagnose_kernels.diag_tile``) walks each query row once:

* every pair is decided as the exact engine decides a grid threshold
  (SPEC 2): a float32 key farther than the row's proven margin
  (``base.key_margins``) from ``t``'s key (``base.dist_to_key``; squared
  for l2) decides by itself, any other is recomputed in float64
  (``_kernels.exact_key``) and decided by ``d <= t`` on that key;
* accepted negatives are counted by gallery class into ``A(c, .)`` of the
  current query class (a C-long counter and the list of classes it
  touched); when the query class changes the touched entries are flushed
  to a sparse ``(c, c', A)`` list, so there is never a dense C x C array;
* accepted positives and ``rejected_q`` (positives with ``d > t``);
* the 3 nearest gallery rows (self excluded) by (float64 key, original
  row): every column within two margins of the third smallest float32 key
  is re-ranked by its float64 key;
* for a row that may be a suspect, the float64 distance of its nearest
  positive (the positives within two margins of the smallest float32 key,
  recomputed).

The rest (impostors, overlap, rejected rows, suspects) is numpy on per-row
arrays and the sparse list; duplicate groups hash the prepared float32
rows (``duplicate_groups``). Tiles run on the exact engine's worker threads;
every sum is an integer, so results do not depend on the split or the block
size.

Peak memory (bytes) above the prepared rows, with nq queries, ng gallery
rows, C classes, w workers, E entries of the sparse table::

    w*tile*ng*4      one tile of float32 inner products per worker
    + w*(ng*24 + C*16)  a row's keys and candidates, the class counter and its touched list
    + nq*48          per-query results (rejected, accepted, top 3, nearest positive)
    + E*16           the sparse table: key c*C + c' and A, int64; the tiles'
                     runs are copied into it one by one and freed (only the
                     classes cut between tiles are re-sorted, in place)
    + CHUNK*150      the overlap step, one chunk of entries at a time
    + N*12           duplicate hashing (a 64-bit hash and an index per row)

E is at most the number of accepted negative pairs, and at most the number
of (query class, gallery class) pairs that accept one; the table stays in
the result (``Diagnosis.pairs``, E*16 bytes). At 75,000 rows x 384 in
20,000 classes at the recommended threshold, E = 37 million (594 MB).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import _diagnose_kernels as _dk
from ..diagnosis import (Coverage, Diagnosis, Estimate, Impostor, OverlapPair, PairTable, RejectedRow,
                         SharedDuplicates, Suspect)
from ..errors import ConfigError, InputError
from ..prepare import Prepared
from .base import DEFAULT_BLOCK_BYTES, dist_to_key, key_margins, query_positives
from .workers import run_tiles

#: nearest gallery rows that decide a suspect (SPEC 16)
NEAREST = 3
#: rejected rows reported per class, overlapping pairs and shared-duplicate pairs shown
REJECTED_SHOWN = 3
TOP_SHOWN = 20


# -- the pass --------------------------------------------------------------------------
@dataclass(frozen=True)
class PassPart:
    """What the diagnosis pass finds for the query rows ``[start, stop)`` (of
    ``Prepared``, class order): per row ``rej``, ``accpos`` (int64), ``top``
    ((n, 3) gallery columns, -1 where fewer), ``npos`` (float64, NaN where
    not needed); and the sparse accepted-negative entries: ``key = c * C +
    c'`` and ``a = A`` (int64), sorted by key with no key twice. A range may
    split a query class: :func:`merge_parts` sums equal keys, so the merged
    result does not depend on where the ranges are cut."""

    start: int
    stop: int
    rej: np.ndarray
    accpos: np.ndarray
    top: np.ndarray
    npos: np.ndarray
    key: np.ndarray
    a: np.ndarray


#: entries handled at once by the chunked steps (compaction, overlap)
CHUNK = 1 << 20


def _merge_runs(runs: list, C: int) -> tuple[np.ndarray, np.ndarray]:
    """One sorted, duplicate-free ``(key, a)`` from runs that are each sorted and
    duplicate-free, in class order (the last class of a run at most the first
    of the next; a class cut between runs has entries in both).

    Consumes ``runs`` (emptied, so each run is freed once copied): the peak is
    the result (16 bytes an entry) plus one run. The result is sorted except
    inside the classes cut between runs (their entries stay contiguous); those
    classes alone are sorted and summed (integer sums), and the freed
    entries compacted in place, chunk by chunk.
    """
    total = sum(len(r[0]) for r in runs)
    key = np.empty(total, np.int64)
    acc = np.empty(total, np.int64)
    at = 0
    runs.reverse()
    while runs:
        k, v = runs.pop()
        key[at:at + len(k)] = k
        acc[at:at + len(k)] = v
        at += len(k)
        del k, v
    if total < 2:
        return key, acc
    bad = np.nonzero(key[1:] <= key[:-1])[0]
    if not len(bad):
        return key, acc
    # the class of an entry never decreases along the array: a binary search
    # for a class's first key is valid though its entries are unsorted
    for c in np.unique(key[bad] // C):
        s = int(np.searchsorted(key, c * C, side="left"))
        e = int(np.searchsorted(key, (c + 1) * C, side="left"))
        order = np.argsort(key[s:e], kind="stable")
        ks, vs = key[s:e][order], acc[s:e][order]
        first = np.nonzero(np.concatenate([[True], ks[1:] != ks[:-1]]))[0]
        m = len(first)
        key[s:s + m] = ks[first]
        acc[s:s + m] = np.add.reduceat(vs, first)
        key[s + m:e] = -1  # freed
    w = 0
    for r in range(0, total, CHUNK):
        kc = key[r:r + CHUNK].copy()
        keep = kc >= 0
        n = int(keep.sum())
        vc = acc[r:r + CHUNK][keep]
        key[w:w + n] = kc[keep]
        acc[w:w + n] = vc
        w += n
    return key[:w], acc[:w]


def merge_parts(parts: list[PassPart], nq: int, C: int) -> dict:
    """The whole pass from parts covering ``[0, nq)`` once (any order, any cut)."""
    parts = sorted(parts, key=lambda p: p.start)
    covered = 0
    for p in parts:
        if p.start != covered:
            raise RuntimeError(f"diagnosis parts leave rows {covered}..{p.start} uncovered; "
                               "please report this")
        covered = p.stop
    if covered != nq:
        raise RuntimeError("diagnosis parts do not cover every query row; please report this")
    if len(parts) == 1:  # one pass over every row: its arrays as they are
        p = parts[0]
        return {"rej": p.rej, "accpos": p.accpos, "top": p.top, "npos": p.npos,
                "key": p.key, "a": p.a}
    rej = np.zeros(nq, np.int64)
    accpos = np.zeros(nq, np.int64)
    top = np.full((nq, 3), -1, np.int64)
    npos = np.full(nq, np.nan)
    for p in parts:
        rej[p.start:p.stop] = p.rej
        accpos[p.start:p.stop] = p.accpos
        top[p.start:p.stop] = p.top
        npos[p.start:p.stop] = p.npos
    key, a = _merge_runs([(p.key, p.a) for p in parts], C)
    return {"rej": rej, "accpos": accpos, "top": top, "npos": npos, "key": key, "a": a}


def sparse_entries(key: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unsorted entries ``(key, n)`` sorted by key, equal keys summed (int64)."""
    order = np.argsort(key, kind="stable")
    key, n = np.asarray(key, np.int64)[order], np.asarray(n, np.int64)[order]
    if not len(key):
        return key, n
    first = np.nonzero(np.concatenate([[True], key[1:] != key[:-1]]))[0]
    return key[first], np.add.reduceat(n, first)


def threshold_keys(t: float, l2: bool) -> tuple[float, float]:
    """Keys just below and above ``t``'s key (``base.dist_to_key``: for l2
    ``t * t`` rounds, so a few ulps each side)."""
    tk = float(dist_to_key(t, l2))
    return (tk * (1 - 4e-16), tk * (1 + 4e-16) + 1e-300) if l2 else (tk, tk)


def pass_range(prep: Prepared, t: float, start: int, stop: int, block_bytes: int,
               progress=None, n_threads: int | None = None) -> PassPart:
    """Run the kernel over the query rows ``[start, stop)`` in tiles of
    ``base.tile_rows(ng)`` rows (cut from ``start``) against the whole gallery,
    on the engines' workers (``workers.run_tiles``)."""
    nq, ng = stop - start, len(prep.g_rows)
    C = prep.n_classes
    l2 = prep.metric == "l2"
    tk_lo, tk_hi = threshold_keys(t, l2)
    margins = key_margins(prep)
    pos_start = prep.class_start[prep.q_class]
    pos_end = prep.class_end[prep.q_class]
    rej = np.zeros(nq, np.int64)
    accpos = np.zeros(nq, np.int64)
    top = np.full((nq, 3), -1, np.int64)
    npos = np.full(nq, np.nan)
    parts: list = []
    scratch: dict = {}
    lock = threading.Lock()

    def body(slot: int, S: np.ndarray, s: int, e: int) -> None:
        if slot not in scratch:  # the class counter, its touched list, a row's candidates
            m = max(ng, 1)
            scratch[slot] = (np.zeros(C, np.int64), np.zeros(C, np.int64), np.zeros(m, np.int64),
                             np.zeros(m), np.zeros(m))
        o, oe = s - start, e - start
        oc, oc2, oa, no = _dk.diag_tile(
            S, e - s, prep.xq[s:e], prep.xg, prep.qn2[s:e], prep.gn2, l2, t, tk_lo, tk_hi,
            margins[s:e], prep.self_col[s:e], prep.q_class[s:e], prep.g_class, prep.g_rows,
            pos_start[s:e], pos_end[s:e], *scratch[slot], rej[o:oe], accpos[o:oe], top[o:oe],
            npos[o:oe], np.empty(1024, np.int32), np.empty(1024, np.int32),
            np.empty(1024, np.int64))
        k = oc[:no].astype(np.int64)
        k *= C
        k += oc2[:no]  # a tile's entries: sorted by (c, c'), no pair twice
        with lock:
            parts.append((s, k, oa[:no].copy()))

    run_tiles(prep, None, block_bytes, "diagnosis", progress, body, (start, stop), n_threads)
    parts.sort(key=lambda p: p[0])  # tiles in row order: runs in class order
    runs = [(p[1], p[2]) for p in parts]
    parts.clear()  # the runs hold the only references: each is freed once merged
    key, a = _merge_runs(runs, C)
    return PassPart(start, stop, rej, accpos, top, npos, key, a)


def _pass(prep: Prepared, t: float, block_bytes: int, progress) -> dict:
    """The pass over every query row, in this process."""
    nq = len(prep.q_rows)
    return merge_parts([pass_range(prep, t, 0, nq, block_bytes, progress)], nq,
                       prep.n_classes)


#: ``run_pass(prep, t, block_bytes, progress) -> merge_parts(...)``: who runs the pass
PassRunner = Callable[[Prepared, float, int, "Callable | None"], dict]


def duplicate_groups(prep: Prepared) -> tuple[int, int, list[tuple[int, int, int]]]:
    """Conflicting duplicate groups of the prepared rows (SPEC 16, threshold-free).

    Every row that is a query or a gallery item, as prepared (float32,
    normalised for cosine). Returns the number of conflicting groups, the
    rows in them, and ``(a, b, shared)`` class-id pairs ``a < b`` for every
    pair of labels sharing a conflicting group.
    """
    # one prepared vector per input row that takes part (query or gallery)
    n = prep.n_samples
    src = np.full(n, -1, np.int64)
    cls = np.full(n, -1, np.int64)
    src[prep.g_rows] = np.arange(len(prep.g_rows))
    cls[prep.g_rows] = prep.g_class
    in_g = src >= 0
    hq = _dk.row_hashes(prep.xq)
    hg = _dk.row_hashes(prep.xg)
    h = np.zeros(n, np.uint64)
    h[prep.g_rows] = hg
    only_q = ~in_g[prep.q_rows]
    h[prep.q_rows[only_q]] = hq[only_q]
    cls[prep.q_rows[only_q]] = prep.q_class[only_q]
    qsrc = np.full(n, -1, np.int64)
    qsrc[prep.q_rows] = np.arange(len(prep.q_rows))
    rows = np.nonzero((src >= 0) | (qsrc >= 0))[0]

    def vec(r: int) -> np.ndarray:
        return prep.xg[src[r]] if src[r] >= 0 else prep.xq[qsrc[r]]

    order = rows[np.argsort(h[rows], kind="stable")]
    hs = h[order]
    groups = rows_in = 0
    shared: dict[tuple[int, int], int] = {}
    s = 0
    while s < len(order):
        e = s + 1
        while e < len(order) and hs[e] == hs[s]:
            e += 1
        if e - s > 1 and len(set(cls[order[s:e]].tolist())) > 1:
            # same hash: split into groups of identical vectors (value equality)
            left = list(order[s:e])
            while left:
                r0 = left[0]
                v0 = vec(r0)
                same = [r for r in left if np.array_equal(vec(r), v0)]
                left = [r for r in left if r not in same]
                labs = sorted(set(cls[same].tolist()))
                if len(labs) > 1:
                    groups += 1
                    rows_in += len(same)
                    for i, x in enumerate(labs):
                        for y in labs[i + 1:]:
                            shared[x, y] = shared.get((x, y), 0) + 1
        s = e
    return groups, rows_in, [(x, y, v) for (x, y), v in shared.items()]


def diagnose(prep: Prepared, threshold: float, *, k: int = 5, level: float = 0.5,
             evaluated: np.ndarray | None = None, block_bytes: int = DEFAULT_BLOCK_BYTES,
             progress: Callable[[str, int, int], None] | None = None,
             run_pass: PassRunner | None = None) -> Diagnosis:
    """SPEC 16 at ``threshold`` (a distance), exactly, in one pass over every pair.

    Parameters
    ----------
    prep : prepared rows (``opis_cli.prepare``), without offsets
    threshold : the distance ``t``; a pair is accepted when ``d <= t``
    k : impostor classes per class (``--impostors``), at least 1
    level : the overlap level ``L`` in (0, 1]
    evaluated : (C,) bool, the evaluated classes (SPEC 3); default P > 0 and M > 0
    block_bytes : memory of the tiles held at once (results do not depend on it)
    run_pass : who runs the pass (default: this process's threads; the Dask
        engine passes one that maps :func:`pass_range` over its workers)

    Returns
    -------
    Diagnosis
    """
    t = float(threshold)
    if prep.q_off is not None:
        raise ConfigError("--diagnose does not take a --calibration (it diagnoses the raw "
                          "distances); run it without one")
    if not math.isfinite(t):
        raise InputError(f"threshold {threshold!r}: expected a finite distance")
    if int(k) < 1:
        raise ConfigError(f"--impostors {k}: expected a whole number >= 1")
    if not (0.0 < float(level) <= 1.0):
        raise ConfigError(f"--overlap-level {level}: expected a number in (0, 1]")
    k, level = int(k), float(level)
    C = prep.n_classes
    labels = prep.class_labels
    P, M = prep.class_pair_counts()
    if evaluated is None:
        evaluated = (P > 0) & (M > 0)
    res = (run_pass or _pass)(prep, t, block_bytes, progress)
    key, a = res.pop("key"), res.pop("a")
    nq_c = np.bincount(prep.q_class, minlength=C).astype(np.int64)
    ng_c = (prep.class_end - prep.class_start).astype(np.int64)
    TP = np.bincount(prep.q_class, weights=res["accpos"], minlength=C).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = np.where(P > 0, TP / np.maximum(P, 1), -np.inf)
    count, tied, overlap_top = _overlap(key, a, C, nq_c, ng_c, tpr, level, labels)
    groups, dup_rows, shared = duplicate_groups(prep)
    shared.sort(key=lambda e: (-e[2], e[0], e[1]))
    Pq = query_positives(prep)
    return Diagnosis(
        coverage=_coverage(prep, res), estimate=_estimate(res),
        threshold=t, k=k, level=level, impostors=_impostors(key, a, C, nq_c, ng_c, evaluated,
                                                            k, labels),
        overlap_count=count, overlap_tied=tied, overlap_top=overlap_top,
        duplicate_groups=groups, duplicate_rows=dup_rows,
        duplicate_top=tuple(SharedDuplicates(labels[p], labels[q], v)
                            for p, q, v in shared[:TOP_SHOWN]),
        rejected_rows=_rejected_rows(prep, res["rej"], Pq, evaluated),
        suspects=_suspects(prep, res, Pq), queries_with_positives=int((Pq > 0).sum()),
        pairs=PairTable(labels, key, a, nq_c, ng_c))


def _impostors(key, a, C, nq_c, ng_c, evaluated, k, labels) -> dict:
    """Per evaluated class, its ``k`` impostor classes by (-A, c') (labels are
    sorted, so ids order them), from the sparse ``(c, c', A)`` entries."""
    # the entries of class c: cb[c]..cb[c+1] (keys sorted by (c, c'))
    cb = np.searchsorted(key, np.arange(C + 1, dtype=np.int64) * C, side="left")
    FP = np.zeros(C, np.int64)
    nonempty = cb[1:] > cb[:-1]
    if nonempty.any():
        FP[nonempty] = np.add.reduceat(a, cb[:-1][nonempty])
    impostors: dict[str, tuple[Impostor, ...]] = {}
    for ci in np.nonzero(evaluated)[0]:
        s, e = int(cb[ci]), int(cb[ci + 1])
        sa = a[s:e]
        sc2 = key[s:e] - ci * C
        sel = np.lexsort((sc2, -sa))[:k]
        impostors[labels[ci]] = tuple(
            Impostor(labels[int(sc2[j])], int(sa[j]),
                     int(sa[j]) / int(nq_c[ci] * ng_c[sc2[j]]), int(sa[j]) / int(FP[ci]))
            for j in sel)
    return impostors


def _overlap(key, a, C, nq_c, ng_c, tpr, level, labels):
    """SPEC 16's overlapping class pairs: their count, the ties at the last
    one shown, and the TOP_SHOWN first.

    Unordered pairs {x < y}, chunk by chunk: an entry (c, c') with c < c'
    meets its mirror (c', c) by a binary search; an entry with c > c' stands
    for its pair only when the mirror is absent."""
    E = len(key)
    hits: list = []
    for r in range(0, E, CHUNK):
        kc = key[r:r + CHUNK]
        ac = a[r:r + CHUNK]
        c = kc // C
        c2 = kc - c * C
        mirror = c2 * C + c
        j = np.searchsorted(key, mirror)
        jj = np.minimum(j, max(E - 1, 0))
        found = (j < E) & (key[jj] == mirror)
        am = np.where(found, a[jj], 0)
        fwd = c < c2
        use = fwd | ~found
        x = np.where(fwd, c, c2)[use]
        y = np.where(fwd, c2, c)[use]
        a_xy = np.where(fwd, ac, 0)[use]
        a_yx = np.where(fwd, am, ac)[use]
        n_xy = nq_c[x] * ng_c[y]
        n_yx = nq_c[y] * ng_c[x]
        den = n_xy + n_yx
        with np.errstate(invalid="ignore", divide="ignore"):
            ov = (a_xy + a_yx) / den
        need = np.maximum(level, np.maximum(tpr[x], tpr[y]))
        hit = (den > 0) & (ov >= need)
        hits.append((x[hit], y[hit], ov[hit], den[hit], a_xy[hit], a_yx[hit], n_xy[hit],
                     n_yx[hit]))
    if hits:
        hx, hy, hov, hden, h_ab, h_ba, hn_ab, hn_ba = (np.concatenate(v) for v in zip(*hits))
    else:
        hx = hy = hden = h_ab = h_ba = hn_ab = hn_ba = np.zeros(0, np.int64)
        hov = np.zeros(0)
    del hits
    ho = np.lexsort((hy, hx, -hden, -hov))
    shown = ho[:TOP_SHOWN]
    overlap_top = tuple(OverlapPair(labels[int(hx[e])], labels[int(hy[e])], float(hov[e]),
                                    int(h_ab[e]), int(h_ba[e]), int(hn_ab[e]), int(hn_ba[e]))
                        for e in shown)
    count = int(len(hx))
    tied = int((hov == hov[shown[-1]]).sum()) if count > TOP_SHOWN else 0
    return count, tied, overlap_top


def _rejected_rows(prep: Prepared, rej, Pq, evaluated) -> dict:
    """Per evaluated class, its REJECTED_SHOWN rows by (-rejected, input row)."""
    C = prep.n_classes
    out: dict[str, tuple[RejectedRow, ...]] = {}
    qb = np.searchsorted(prep.q_class, np.arange(C + 1), side="left")
    for ci in np.nonzero(evaluated)[0]:
        rr = np.arange(qb[ci], qb[ci + 1])
        rr = rr[(Pq[rr] > 0) & (rej[rr] > 0)]
        rr = rr[np.lexsort((prep.q_rows[rr], -rej[rr]))][:REJECTED_SHOWN]
        out[prep.class_labels[ci]] = tuple(
            RejectedRow(int(prep.q_rows[i]), int(rej[i]), int(rej[i]) / int(Pq[i])) for i in rr)
    return out


def _suspects(prep: Prepared, res: dict, Pq) -> tuple:
    """Rows with P_q > 0, no accepted positive, 3 nearest of one other label."""
    top = res["top"]
    ok3 = (top >= 0).all(axis=1)
    tl = np.where(top >= 0, prep.g_class[np.maximum(top, 0)], -1)
    sus = ok3 & (Pq > 0) & (res["accpos"] == 0) & (tl[:, 0] == tl[:, 1]) \
        & (tl[:, 0] == tl[:, 2]) & (tl[:, 0] != prep.q_class)
    si = np.nonzero(sus)[0]
    si = si[np.argsort(prep.q_rows[si], kind="stable")]
    labels = prep.class_labels
    return tuple(Suspect(int(prep.q_rows[i]), labels[int(prep.q_class[i])],
                         labels[int(tl[i, 0])], float(res["npos"][i])) for i in si)


def _coverage(prep: Prepared, res: dict) -> Coverage | None:
    """What the knn engine's candidates could see (None for an exact pass)."""
    if "complete" not in res:
        return None
    info = res["coverage"]
    return Coverage("candidates", int(info["k"]), str(info["index"]),
                    bool(info["exact_search"]), len(prep.q_rows),
                    int(res["complete"].sum()), int(res["nearest_known"].sum()),
                    complete_rows=np.sort(prep.q_rows[res["complete"]]))


def _estimate(res: dict) -> Estimate | None:
    """How the sampled engine's draws estimate (None for an exact pass)."""
    if "estimate" not in res:
        return None
    e = res["estimate"]
    return Estimate(
        "sampled negatives (the sampled engine's draws), Horvitz-Thompson: drawn accepted "
        "negatives x ng / S, rounded; exact positives and suspects", int(e["seed"]),
        int(e["negatives_per_query"]), bool(e["every_pair"]), int(e["pairs_drawn"]),
        int(e["accepted_pairs_drawn"]), float(e["scale"]))
