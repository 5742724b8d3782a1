"""Compiled kernels of the diagnosis pass (SPEC 16, ``engines/diagnose.py``).

``diag_tile`` walks the query rows of one tile of float32 inner products
once (decisions at ``t`` with float64 re-decision within the margin,
accepted negatives by gallery class flushed to a sparse list when the
query class changes, rejected positives, the 3 nearest by float64 key and
the nearest positive's distance); ``row_hashes`` hashes prepared rows for
the duplicate groups. See ``engines/diagnose.py`` for the algorithm and
its memory.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from . import _kernels
from ._jit import kernel


# -- the kernel ----------------------------------------------------------------------
@kernel
def _accepts(key, m, tk_lo, tk_hi, t, xr, xg, j, l2):
    """``d <= t`` for a pair whose float32 key is ``key`` (within ``m`` of its
    float64 key): decided by the float32 key when it is farther than the
    margin from ``t``, else by the float64 key (``sqrt`` of it for l2)."""
    if key + m < tk_lo:
        return True
    if key - m > tk_hi:
        return False
    k64 = _kernels.exact_key(xr, xg, j, l2, False, 0.0, 0.0)
    d = np.sqrt(max(k64, 0.0)) if l2 else k64
    return d <= t


@kernel
def _flush(cur, acc, touched, nt, oc, oc2, oa, no):
    """Move the touched entries of ``acc`` (query class ``cur``) to the output
    lists, growing them when full; returns the lists and their length."""
    if no + nt > oc.shape[0]:
        cap = max(2 * oc.shape[0], no + nt)
        oc_n = np.empty(cap, np.int32)
        oc2_n = np.empty(cap, np.int32)
        oa_n = np.empty(cap, np.int64)
        oc_n[:no] = oc[:no]
        oc2_n[:no] = oc2[:no]
        oa_n[:no] = oa[:no]
        oc, oc2, oa = oc_n, oc2_n, oa_n
    touched[:nt].sort()  # entries of a class in gallery-class order
    for u in range(nt):
        c2 = touched[u]
        oc[no] = cur
        oc2[no] = c2
        oa[no] = acc[c2]
        acc[c2] = 0
        no += 1
    return oc, oc2, oa, no


@kernel
def _negatives(kb, j0, j1, m, tk_lo, tk_hi, t, xr, xg, l2, g_class, acc, touched, nt):
    """Count the accepted negatives of columns ``[j0, j1)`` by gallery class into
    ``acc`` (``touched[:nt]`` lists the classes counted so far); returns ``nt``."""
    for j in range(j0, j1):
        key = kb[j]
        if key - m > tk_hi:  # the usual case: surely above t
            continue
        if _accepts(key, m, tk_lo, tk_hi, t, xr, xg, j, l2):
            c2 = g_class[j]
            if acc[c2] == 0:
                touched[nt] = c2
                nt += 1
            acc[c2] += 1
    return nt


@kernel
def diag_tile(S, n, xq, xg, qn2, gn2, l2, t, tk_lo, tk_hi, margins, self_col, q_class,
              g_class, g_orig, pos_start, pos_end, acc, touched, cand, ckey, kb,
              rej, accpos, top, npos, oc, oc2, oa):
    """One tile of ``n`` query rows (``S[:n]``: their float32 inner products with
    the whole gallery; the row arrays are those of the tile; ``kb`` a float64
    buffer of one row's keys). Writes per row ``rej`` (positives with d > t),
    ``accpos`` (positives with d <= t), ``top`` (the 3 nearest gallery columns
    by float64 key, ties by original row; -1 where there are fewer), ``npos``
    (float64 distance of the nearest positive, only for rows whose 3 nearest
    share a label other than their own and that accept no positive; NaN
    otherwise). Returns the flushed sparse entries ``(c, c', A)`` and their
    number."""
    ng = S.shape[1]
    no = 0
    cur = -1
    nt = 0
    inf = np.inf
    for i in range(n):
        c = q_class[i]
        if c != cur:
            if nt:
                oc, oc2, oa, no = _flush(cur, acc, touched, nt, oc, oc2, oa, no)
            nt = 0
            cur = c
        xr = xq[i]
        m = margins[i]
        sc = self_col[i]
        ps = pos_start[i]
        pe = pos_end[i]
        # the row's float32 keys, the query's own column at +inf (never paired),
        # and the three smallest of them
        k1 = inf
        k2 = inf
        k3 = inf
        qn = qn2[i] if l2 else 0.0
        for j in range(ng):
            if l2:
                key = qn + gn2[j] - 2.0 * np.float64(S[i, j])
            else:
                key = 1.0 - np.float64(S[i, j])
            if j == sc:
                key = inf
            kb[j] = key
            if key < k3:
                if key < k2:
                    k3 = k2
                    if key < k1:
                        k2 = k1
                        k1 = key
                    else:
                        k2 = key
                else:
                    k3 = key
        nt = _negatives(kb, 0, ps, m, tk_lo, tk_hi, t, xr, xg, l2, g_class, acc, touched, nt)
        nt = _negatives(kb, pe, ng, m, tk_lo, tk_hi, t, xr, xg, l2, g_class, acc, touched, nt)
        a = 0
        r = 0
        for j in range(ps, pe):
            if j == sc:
                continue
            if _accepts(kb[j], m, tk_lo, tk_hi, t, xr, xg, j, l2):
                a += 1
            else:
                r += 1
        rej[i] = r
        accpos[i] = a
        for u in range(3):
            top[i, u] = -1
        npos[i] = np.nan
        if k3 == inf:
            continue
        # the 3 nearest by (float64 key, original row): every column within two
        # margins of the third smallest float32 key, re-ranked in float64
        lim = k3 + 2.0 * m
        nc = 0
        for j in range(ng):
            if kb[j] <= lim:
                cand[nc] = j
                ckey[nc] = _kernels.exact_key(xr, xg, j, l2, False, 0.0, 0.0)
                nc += 1
        for u in range(3):
            best = -1
            for v in range(nc):
                j = cand[v]
                if j < 0:
                    continue
                if best < 0 or ckey[v] < ckey[best] or (
                        ckey[v] == ckey[best] and g_orig[j] < g_orig[cand[best]]):
                    best = v
            top[i, u] = cand[best]
            cand[best] = -1
        # a possible suspect: the nearest positive's float64 distance
        lc = g_class[top[i, 0]]
        if a == 0 and r > 0 and lc != c and g_class[top[i, 1]] == lc \
                and g_class[top[i, 2]] == lc:
            kmin = inf
            for j in range(ps, pe):
                if kb[j] < kmin:
                    kmin = kb[j]
            lim = kmin + 2.0 * m
            best64 = inf
            for j in range(ps, pe):
                if j != sc and kb[j] <= lim:
                    k64 = _kernels.exact_key(xr, xg, j, l2, False, 0.0, 0.0)
                    if k64 < best64:
                        best64 = k64
            npos[i] = np.sqrt(max(best64, 0.0)) if l2 else best64
    if nt:
        oc, oc2, oa, no = _flush(cur, acc, touched, nt, oc, oc2, oa, no)
    return oc, oc2, oa, no


@kernel
def row_hashes(x):
    """A 64-bit FNV-1a hash of every float32 row's bits (``-0.0`` as ``0.0``)."""
    n, d = x.shape
    out = np.empty(n, np.uint64)
    bits = x.view(np.uint32)
    for i in range(n):
        h = np.uint64(14695981039346656037)
        for k in range(d):
            b = bits[i, k]
            if b == np.uint32(0x80000000):
                b = np.uint32(0)
            h = (h ^ np.uint64(b)) * np.uint64(1099511628211)
        out[i] = h
    return out
