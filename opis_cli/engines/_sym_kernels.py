"""Compiled kernels of the counts pass over the upper triangle (``symmetric.py``).

When every query is also a gallery item (``tiles.Layout``, without
offsets), the inner product of queries ``i`` and ``j`` serves both directed
pairs ``(i, j)`` and ``(j, i)``: the key is the same (the squared norms are
the same numbers, added in either order), and so is the float64 key that
decides (``_kernels.exact_key``: products commute, ``x - y == -(y - x)``).
``count_strip`` reads one strip of the upper triangle (queries ``[t, u)``,
query columns ``j > i``, then the gallery-only columns) once and counts
every pair of queries for both, every other pair for its query:

* grid counts: a decided cell adds to the class (and group) of ``i`` and,
  for a query column, of ``j``; an undecided key is deferred once, ``(i,
  j)``, and placed for both queries (``tiles._add_part``);
* the report histogram and the order statistics' gather: weight
  ``[i counts] + [j counts]``;
* retrieval: the key is offered to the nearest-items heap of ``i`` and to
  that of a query ``j``. The heaps outlive the strip (a row's pairs come
  from every earlier strip and its own): one set per worker, merged by
  ``merge_heaps`` after the pass, which then ranks the candidates by
  float64 key exactly as ``_kernels._exact_topk`` does for a full row.

A row's side list (near misses within twice its margin of its heap's top)
has a fixed capacity; a row whose near misses do not fit is flagged and
ranked again on its full row (``symmetric._rank_again``). Counts go to the
worker's per-class and per-group histograms (integer sums; row i's summed over
the row first, a column's written at once).

The per-key work is written out inside ``count_strip`` rather than in
helpers taking the named tuples: numba counts a reference to every array
a call passes (atomic operations, contended when the workers share the
arrays), which made a helper called per key cost hundreds of nanoseconds.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import _kernels as K_
from ._jit import kernel


class SymRows(NamedTuple):
    """The columns of ``tiles.Layout`` (the queries first, then the
    gallery-only items), and the query rows."""

    l2: bool                 # keys are squared l2 distances (else cosine)
    n2: np.ndarray           # (ng,) float64 squared norms, per column
    qs: np.ndarray           # (nq,) int64: a query's positives are the
    qe: np.ndarray           # (nq,) int64  columns [qs, qe) among the queries
    gs: np.ndarray           # (nq,) int64  and [gs, ge) among the others
    ge: np.ndarray           # (nq,) int64
    cls: np.ndarray          # (ng,) int64 class
    grp: np.ndarray          # (ng,) int64 group, -1 without (and gallery-only)
    ev: np.ndarray           # (ng,) int64 1 where the query's class is evaluated
    rs: np.ndarray           # (ng,) int64 1 where the query feeds the report histogram
    orig: np.ndarray         # (ng,) int64 original row
    margin: np.ndarray       # (ng,) float64 bound on |float32 key - float64 key|
    x: np.ndarray            # (nq, D) float32 query rows (the float64 re-decision)
    gx: np.ndarray           # (ng, D) float32 gallery rows, by gallery column
    gcol: np.ndarray         # (ng,) int64 gallery column of each column
    nq: int                  # columns [0, nq) are the queries


class Heaps(NamedTuple):
    """One worker's retrieval state of every row (flat, ``off[j]`` the start
    of row j's heap of ``size[j]`` items and ``soff[j]`` of its side list)."""

    off: np.ndarray          # (n,) int64
    size: np.ndarray         # (n,) int64 heap size max(R, 8) (0: no retrieval)
    key: np.ndarray          # (H,) float64 float32-product keys, a max-heap per row
    orig: np.ndarray         # (H,) int64 original row (ties)
    pos: np.ndarray          # (H,) bool relevant
    col: np.ndarray          # (H,) int64 column
    fill: np.ndarray         # (n,) int64 items in the heap
    soff: np.ndarray         # (n + 1,) int64
    skey: np.ndarray         # (S,) float64 side list keys
    scol: np.ndarray         # (S,) int64 side list columns
    sfill: np.ndarray        # (n,) int64
    over: np.ndarray         # (n,) bool the side list overflowed
    thr: np.ndarray          # (n,) float64 keys above it are not offered
    lim: np.ndarray          # (n,) float64 no key above it can rank (a full
                             # heap's threshold is the lower of this and its top
                             # plus twice the margin)


class SymOut(NamedTuple):
    """One worker's sums: grid counts per class and group, gathered keys
    below each bracket."""

    call: np.ndarray         # (C, K) int64
    cpos: np.ndarray         # (C, K) int64
    gall: np.ndarray         # (G, K) int64 (or (1, K) without groups)
    gpos: np.ndarray         # (G, K) int64
    below: np.ndarray        # (2,) int64


@kernel
def _side_add(j, key, col, top, soff, skey, scol, sfill, over):
    """Append (key, col) to row ``j``'s side list; when it is full, drop the
    entries above ``top`` first, and flag the row when that frees nothing."""
    if over[j]:
        return
    s0 = soff[j]
    cap = soff[j + 1] - s0
    n = sfill[j]
    if n == cap:
        m = 0
        for u in range(n):
            if skey[s0 + u] <= top:
                skey[s0 + m] = skey[s0 + u]
                scol[s0 + m] = scol[s0 + u]
                m += 1
        n = m
        if n == cap:
            over[j] = True
            return
    skey[s0 + n] = key
    scol[s0 + n] = col
    sfill[j] = n + 1


@kernel
def _sure_cell(key, M, lo_b, hi_b, sq, base, inv_step):
    """``_kernels._sure_cell``: the cell every key within ``M`` of ``key``
    falls in (K above the grid), or -1; ``_kernels._cell`` of ``key - M``
    and ``key + M`` written out (one call, see the module docstring)."""
    K = lo_b.shape[0]
    first = -1
    for side in range(2):
        v = key - M if side == 0 else key + M
        cell = 0
        if v > lo_b[0]:
            k = K_._guess(v, sq, K, base, inv_step)
            while k > 0 and hi_b[k - 1] >= v:
                k -= 1
            while k < K and hi_b[k] < v:
                k += 1
            cell = k
            while k < K and lo_b[k] < v:
                k += 1
            if k != cell:
                return -1
        if side == 0:
            first = cell
        elif cell != first:
            return -1
    return first


@kernel
def _grow(dval, dpos, dq, dg, nd):
    """The deferred buffers with room for twice as many."""
    cap = 2 * dval.shape[0] + 64
    v = np.empty(cap, np.float64)
    p = np.empty(cap, np.bool_)
    q = np.empty(cap, np.int32)
    g = np.empty(cap, np.int32)
    v[:nd] = dval[:nd]
    p[:nd] = dpos[:nd]
    q[:nd] = dq[:nd]
    g[:nd] = dg[:nd]
    return v, p, q, g


@kernel
def _gather(vals, idx, n, w_i, ev, lo, hi, gval, ng, below, xr, gx, gcol, l2, M):
    """The order statistics' brackets for the negatives ``vals[:n]`` (columns
    ``idx``) of one row, as ``_kernels._gather_row`` with each key counted
    ``w_i + ev[column]`` times (once per direction whose query is
    evaluated); ``gval`` grows when full. Returns (gval, ng)."""
    lo0 = lo[0] - M
    lo1 = lo[1] - M
    hi0 = hi[0] + M
    hi1 = hi[1] + M
    for u in range(n):
        key = vals[u]
        w = w_i + ev[idx[u]]
        if w == 0:
            continue
        in0 = (lo0 <= key) and (key < hi0)
        in1 = (lo1 <= key) and (key < hi1)
        if not (in0 or in1):
            below[0] += w * (key < lo0)
            below[1] += w * (key < lo1)
            continue
        k = K_.exact_key(xr, gx, gcol[idx[u]], l2, False, 0.0, 0.0)
        vals[u] = k
        taken = False
        for g in range(2):
            if k < lo[g]:
                below[g] += w
            elif k < hi[g] and not taken:
                if ng + w > gval.shape[0]:
                    grown = np.empty(2 * gval.shape[0] + 64, np.float64)
                    grown[:ng] = gval[:ng]
                    gval = grown
                for _ in range(w):
                    gval[ng] = k
                    ng += 1
                taken = True
    return gval, ng


@kernel
def count_strip(S, S2, row0, c0, rows, sampled, rep, gat, grid, ret_on, h, out, dbuf, gbuf):
    """One strip of the upper triangle: ``S[r, j - c0]`` is the product of
    queries ``row0 + r`` and ``j`` (``c0 <= j < nq``), ``S2[r, j - nq]``
    that of query ``row0 + r`` and the gallery-only column ``j``; every
    pair of queries ``j > i`` is counted for both (module docstring), a
    gallery-only column for query ``i`` alone. ``rep``/``gat``/``grid``
    as for ``_kernels.process_block`` (only their switches, bounds and the
    report's slot-0 arrays are read: pass this worker's; ``sampled`` the
    rows that feed the report, in order); ``h`` this
    worker's :class:`Heaps` (read when ``ret_on``), ``out`` its
    :class:`SymOut`. ``dbuf`` = (keys, positive, query, column, n) of the
    deferred pairs and ``gbuf`` = (keys, n) of the gathered ones; both grow
    and are returned as such tuples."""
    dval, dpos, dq, dg, nd = dbuf
    gval, ngat = gbuf
    # the tuples' arrays as locals (numba would count a reference to each on
    # every access inside the loops)
    l2, n2, qs, qe, gs, ge, cls, grp, ev, rs, orig, margin, x, gx, gcol, nq = rows
    off, size, hk, ho, hp, hc, fill, soff, skey, scol, sfill, over, thr_all, lim = h
    do_rep, rep_lo, rep_scale, RB, rep_pos, rep_neg = rep
    do_gather, gat_lo, gat_hi = gat.on, gat.lo, gat.hi
    lo_b, hi_b, cert_lo, base, inv_step = grid.lo_b, grid.hi_b, grid.cert_lo, grid.base, \
        grid.inv_step
    call, cpos, gall, gpos, below = out
    sq = l2
    K = lo_b.shape[0]
    key_skip = hi_b[K - 1]
    B = S.shape[0]
    Ng = n2.shape[0]
    kc_buf = np.empty(K_.COLS, np.float64)
    vals = np.empty(Ng + 8, np.float64)
    idx = np.empty(Ng + 8, np.int64)
    pvals = np.empty(Ng + 8, np.float64)
    pidx = np.empty(Ng + 8, np.int64)
    hit = np.empty(K_.COLS + 8, np.int64)
    hval = np.empty(K_.COLS + 8, np.float64)
    hlim = np.empty(K_.COLS, np.float64)
    racc = np.zeros(K, np.int64)
    racc_p = np.zeros(K, np.int64)
    ms = 0.0
    for r in range(B):
        i = row0 + r
        ci = cls[i]
        gi = grp[i]
        M = margin[i]
        xr = x[i]
        row = S[r]
        row2 = S2[r]
        n = 0
        n_pos = 0
        ms = M * rep_scale
        a1 = i + 1
        while a1 < Ng:
            # the queries' columns, then the others: no chunk holds both
            a0 = a1
            a1 = min(nq if a0 < nq else Ng, a0 + K_.COLS)
            ps, pe = (qs[i], qe[i]) if a0 < nq else (gs[i], ge[i])
            kc = kc_buf[:a1 - a0]
            if a0 < nq:
                K_._keys_row(row[a0 - c0:a1 - c0], l2, n2[i], n2[a0:a1], kc)
            else:
                K_._keys_row(row2[a0 - nq:a1 - nq], l2, n2[i], n2[a0:a1], kc)
            if do_rep:
                # the report histogram: each key once for each of its queries
                # that feeds it (every column where row i does, else the
                # sampled columns); a key within M of a bin edge is binned,
                # and replaced in kc, by its float64 key
                if rs[i]:
                    u, u1 = 0, a1 - a0
                else:
                    u = np.searchsorted(sampled, a0)
                    u1 = np.searchsorted(sampled, a1)
                while u < u1:
                    jj = u if rs[i] else sampled[u] - a0
                    u += 1
                    j = a0 + jj
                    key = kc[jj]
                    fr = (key - rep_lo) * rep_scale
                    fr -= np.floor(fr)
                    if fr < ms or fr > 1.0 - ms:
                        key = K_.exact_key(xr, gx, gcol[j], l2, False, 0.0, 0.0)
                        kc[jj] = key
                    bb = K_._bin(key, rep_lo, rep_scale, RB)
                    w = rs[i] + rs[j] if rs[i] else 1
                    if ps <= j < pe:
                        rep_pos[0, bb] += w
                    else:
                        rep_neg[0, bb] += w
            a = min(max(ps, a0), a1) - a0
            b = min(max(pe, a0), a1) - a0
            n = K_._compact_idx(kc, 0, a, key_skip + M, vals, idx, n, a0)
            n = K_._compact_idx(kc, b, a1 - a0, key_skip + M, vals, idx, n, a0)
            # the positives (the same class for both queries)
            n_pos = K_._compact_idx(kc, a, b, key_skip + M, pvals, pidx, n_pos, a0)
            if ret_on:
                # retrieval: the chunk's keys to the heap of i (column j) and to
                # the heaps of the columns j (column i), as _kernels._heap_scan
                # (h.lim the limit); the candidates first, compacted
                # (thresholds only fall: a key above them now never enters)
                m = a1 - a0
                top = thr_all[i]
                if a0 < nq:  # (kc <= top) | (kc <= thr_all[j]): no key is NaN
                    for jj in range(m):
                        hlim[jj] = max(top, thr_all[a0 + jj])
                    n_hit = K_._compact_idx_each(kc, 0, m, hlim, hval, hit, 0, 0)
                else:  # gallery-only columns keep no heap
                    n_hit = K_._compact_idx(kc, 0, m, top, hval, hit, 0, 0)
                sides = 2 if a0 < nq else 1
                for u in range(n_hit):
                    jj = hit[u]
                    key = kc[jj]
                    j = a0 + jj
                    p = ps <= j < pe
                    for side in range(sides):
                        t = i if side == 0 else j          # whose heap
                        c = j if side == 0 else i          # the item's column
                        if not key <= thr_all[t]:
                            continue
                        o = orig[c]
                        M2 = 2 * margin[t]
                        h0 = off[t]
                        f = fill[t]
                        if f < size[t]:
                            hk[h0 + f] = key
                            ho[h0 + f] = o
                            hp[h0 + f] = p
                            hc[h0 + f] = c
                            K_._sift_up(hk, ho, hp, hc, h0, f)
                            fill[t] = f + 1
                            if f + 1 == size[t]:
                                thr_all[t] = min(lim[t], hk[h0] + M2)
                        elif K_._before(key, o, hk[h0], ho[h0]):
                            out_k = hk[h0]
                            out_c = hc[h0]
                            hk[h0] = key
                            ho[h0] = o
                            hp[h0] = p
                            hc[h0] = c
                            K_._sift_down(hk, ho, hp, hc, h0, f, 0)
                            thr_all[t] = min(lim[t], hk[h0] + M2)
                            _side_add(t, out_k, out_c, out_k + M2, soff, skey, scol, sfill,
                                      over)
                        else:
                            _side_add(t, key, c, hk[h0] + M2, soff, skey, scol, sfill, over)
        if do_gather:
            gval, ngat = _gather(vals, idx, n, ev[i], ev, gat_lo, gat_hi, gval, ngat, below, xr,
                                 gx, gcol, l2, M)
        # the negatives, then the positives, each for both its queries (no
        # call per key: numba would count a reference to each array it passes);
        # row i's cells summed in racc/racc_p (one class and group), the
        # columns' written to their class and group at once
        racc[:] = 0
        racc_p[:] = 0
        for part in range(2):
            pos = part == 1
            for u in range(n_pos if pos else n):
                key = pvals[u] if pos else vals[u]
                j = pidx[u] if pos else idx[u]
                k = K_._guess(key, sq, K, base, inv_step)
                if cert_lo[k] + M < key and key <= lo_b[k] - M:
                    cell = k
                elif lo_b[k] - M < key and key <= hi_b[k] + M:
                    cell = -1  # in threshold k's zone (see _kernels._sure_cell)
                else:
                    cell = _sure_cell(key, M, lo_b, hi_b, sq, base, inv_step)
                if cell < 0:  # deferred once, for both its queries
                    if nd == dval.shape[0]:
                        dval, dpos, dq, dg = _grow(dval, dpos, dq, dg, nd)
                    dval[nd] = key
                    dpos[nd] = pos
                    dq[nd] = i
                    dg[nd] = j
                    nd += 1
                elif cell < K:
                    racc[cell] += 1
                    racc_p[cell] += pos
                    if j < nq:  # a query: its direction too
                        gj = grp[j]
                        call[cls[j], cell] += 1
                        if gj >= 0:
                            gall[gj, cell] += 1
                        if pos:
                            cpos[ci, cell] += 1
                            if gj >= 0:
                                gpos[gj, cell] += 1
        for k in range(K):
            call[ci, k] += racc[k]
            cpos[ci, k] += racc_p[k]
            if gi >= 0:
                gall[gi, k] += racc[k]
                gpos[gi, k] += racc_p[k]
    return (dval, dpos, dq, dg, nd), (gval, ngat)


@kernel
def merge_heaps(hs, j, out_k, out_c, side_k, side_c):
    """Row ``j``'s candidates from every worker's heaps ``hs`` (a tuple of
    :class:`Heaps`): the ``size`` nearest by (float32 key, original row) as a
    heap whose top (position 0) is the last of them (``out_k``/``out_c``),
    the others and every side list as the side list (``side_k``/``side_c``,
    grown when needed). Returns (side_k, side_c, side count), or a count of
    -1 when a worker's side list overflowed (or the heaps hold too few)."""
    size = hs[0].size[j]
    total = 0
    ns = 0
    for h in hs:
        if h.over[j]:
            return side_k, side_c, -1
        total += h.fill[j]
        ns += h.sfill[j]
    if total < size:  # not every column was offered (not expected)
        return side_k, side_c, -1
    ck = np.empty(total, np.float64)
    co = np.empty(total, np.int64)
    cc = np.empty(total, np.int64)
    m = 0
    for h in hs:
        h0 = h.off[j]
        for u in range(h.fill[j]):
            ck[m] = h.key[h0 + u]
            co[m] = h.orig[h0 + u]
            cc[m] = h.col[h0 + u]
            m += 1
    by_orig = np.argsort(co, kind="mergesort")
    order = by_orig[np.argsort(ck[by_orig], kind="mergesort")]
    need = ns + total - size
    if need > side_k.shape[0]:
        side_k = np.empty(2 * need, np.float64)
        side_c = np.empty(2 * need, np.int64)
    # the heap: the nearest `size`, the last of them (its top) first
    for u in range(size):
        v = order[size - 1 - u]
        out_k[u] = ck[v]
        out_c[u] = cc[v]
    s = 0
    for u in range(size, total):
        side_k[s] = ck[order[u]]
        side_c[s] = cc[order[u]]
        s += 1
    for h in hs:
        s0 = h.soff[j]
        for u in range(h.sfill[j]):
            side_k[s] = h.skey[s0 + u]
            side_c[s] = h.scol[s0 + u]
            s += 1
    return side_k, side_c, s


@kernel
def rank_rows(hs, rows, ps, pe, g_orig, R, first_rank, ap, hits, redo, j0, j1):
    """Retrieval of queries ``[j0, j1)`` from the merged heaps
    (``_kernels._exact_topk`` on each query's candidates, in gallery columns:
    ``ps``/``pe`` its positives, ``g_orig`` the original rows); ``redo[j]``
    is set where a side list overflowed (that row is ranked again on its full
    row). Each row reads the heaps and writes its own outputs only, so
    ranges may run on threads of their own."""
    gcol = rows.gcol
    side_k = np.empty(64, np.float64)
    side_c = np.empty(64, np.int64)
    for j in range(j0, j1):
        size = hs[0].size[j]
        if size == 0:
            continue
        hk = np.empty(size, np.float64)
        hc = np.empty(size, np.int64)
        side_k, side_c, ns = merge_heaps(hs, j, hk, hc, side_k, side_c)
        if ns < 0:
            redo[j] = True
            continue
        for u in range(size):
            hc[u] = gcol[hc[u]]
        for u in range(ns):
            side_c[u] = gcol[side_c[u]]
        first_rank[j], ap[j], hits[j] = K_._exact_topk(
            hk, hc, size, side_k, side_c, ns, 2 * rows.margin[j], ps[j], pe[j], g_orig, R[j],
            rows.x[j], rows.gx, rows.l2, False, 0.0, rows.n2)
