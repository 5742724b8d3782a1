"""Compiled kernels of the threshold-transfer passes (``engines/transfer.py``).

The second numba module of the package, beside ``_kernels.py`` whose key
formula (``_key``) and histogram bin (``_bin``) it reuses, so that a key
and its bin are the same bits in every pass of every engine.

Rows belong to *folds*; a *side* is a set of folds whose rows are paired
only among themselves (SPEC 12). A pair of a query in fold ``i`` and a
gallery row in fold ``j`` lies in *cell* ``(i, j)``, and in every side that
holds both folds. Both kernels are serial, release the GIL and work on one
tile ``S`` of float32 inner products (queries x the whole gallery); the
engine runs one per worker thread, each with its own outputs.
"""

from __future__ import annotations

from typing import NamedTuple

import numba as nb
import numpy as np

from ._kernels import _bin, _key, exact_key
from ._jit import kernel


#: gallery columns whose keys are computed and compacted together (in L1)
COLS = 2048


class TileRows(NamedTuple):
    """A tile's query rows against the whole gallery (every kernel here)."""

    l2: bool                 # keys are squared l2 distances (else cosine)
    qn2: np.ndarray          # (B,) float64 squared norms of the queries
    gn2: np.ndarray          # (ng,) float64 squared norms of the gallery
    self_col: np.ndarray     # (B,) int64 column of the query's own row, or -1
    ps: np.ndarray           # (B,) int64: the query's positives are the
    pe: np.ndarray           # (B,) int64  columns [ps, pe)
    xq: np.ndarray           # (B, D) float32 rows: the float64 keys of gathered pairs
    xg: np.ndarray           # (ng, D) float32


def rows_of(prep, s: int, e: int) -> TileRows:
    """The ``TileRows`` of prepared (``prepare.Prepared``) query rows ``[s, e)``."""
    cls = prep.q_class[s:e]
    return TileRows(prep.metric == "l2", prep.qn2[s:e], prep.gn2, prep.self_col[s:e],
                    prep.class_start[cls], prep.class_end[cls], prep.xq[s:e], prep.xg)


class Bins(NamedTuple):
    """Even histogram bins over key space (``select.KeyBins``, ``_kernels._bin``)."""

    lo: float
    scale: float
    F: int


@kernel
def _below(row, c0, c1, q2, gn2, l2, limit, kb, idx):
    """Keys of columns [c0, c1) of a row, compacted: those below ``limit`` go to
    ``kb[:m]`` with their columns in ``idx[:m]`` (branch-free); returns m."""
    m = 0
    for j in range(c0, c1):
        key = _key(row[j], q2, gn2[j], l2)
        kb[m] = key
        idx[m] = j
        m += key < limit
    return m


@kernel
def cell_histograms(S, rows, bins, fold_q, fold_g, K, row_mode, row_sides, limit, cell_pos,
                    cell_neg, side_pos, side_neg):
    """Pass 1: histograms of the keys of every pair, by cell or by side.

    ``row_mode[r]``: 0 = the row is evaluated in no side (skipped), 1 = in
    every side that holds its fold (its pairs go to the cell histograms
    ``cell_pos``/``cell_neg`` (K*K, F), which the caller sums per side),
    2 = in some of them only (its pairs go straight to the histograms of
    the sides ``row_sides[r, j_fold, :]`` (-1 where not) that hold the pair
    and where the row is evaluated: ``side_pos``/``side_neg`` (n_sides, F)).
    Only keys below ``limit`` are counted (the histograms span ``[lo, limit)``).
    """
    l2, qn2, gn2, self_col, ps, pe = rows.l2, rows.qn2, rows.gn2, rows.self_col, rows.ps, rows.pe
    lo, scale, F = bins
    B = S.shape[0]
    ng = S.shape[1]
    n_s = row_sides.shape[2]
    kb = np.empty(COLS, np.float64)
    idx = np.empty(COLS, np.int64)
    for r in range(B):
        mode = row_mode[r]
        if mode == 0:
            continue
        q2 = qn2[r]
        sc = self_col[r]
        p0 = ps[r]
        p1 = pe[r]
        base = fold_q[r] * K
        row = S[r]
        for c0 in range(0, ng, COLS):
            n = _below(row, c0, min(ng, c0 + COLS), q2, gn2, l2, limit, kb, idx)
            for t in range(n):
                j = idx[t]
                if j == sc:
                    continue
                b = _bin(kb[t], lo, scale, F)
                pos = p0 <= j < p1
                if mode == 1:
                    c = base + fold_g[j]
                    if pos:
                        cell_pos[c, b] += 1
                    else:
                        cell_neg[c, b] += 1
                    continue
                fg = fold_g[j]
                for m in range(n_s):
                    si = row_sides[r, fg, m]
                    if si < 0:
                        continue
                    if pos:
                        side_pos[si, b] += 1
                    else:
                        side_neg[si, b] += 1


@kernel
def gather_targets(S, rows, bins, fold_q, fold_g, row_sides, limit, flag, tw0, tw1, own_side,
                   own_below, g_key, g_code, g_n):
    """Pass 2: count each row's pairs below its own side's target windows and
    gather every pair whose bin lies in a target window of a side holding it.

    ``tw0[s, m]``/``tw1[s, m]`` (n_sides, T) are the first and last bin of
    target ``m`` of side ``s`` (-1: no target); ``flag[b]`` is true when bin
    ``b`` lies in some window (the fast test). ``own_side[r]`` is the side
    whose per-row counts row ``r`` keeps (its own fold alone: pairs with a
    gallery row of the same fold), or -1; ``own_below[r, m, pos]`` counts
    its pairs with a bin below ``tw0[own_side, m]``. Gathered: ``g_key[r, i]``
    the float64 key (``exact_key`` of query row ``xq[r]`` and ``xg[j]``: the
    windows are brackets, ``base.bracket_bins``) and ``g_code[r, i] = (s * T + m) * 2 + pos``; ``g_n[r]`` the true
    number (may exceed the capacity: the caller runs the tile again with
    more room). Keys at or above ``limit`` (above every window) are skipped.
    """
    l2, qn2, gn2, self_col, ps, pe = rows.l2, rows.qn2, rows.gn2, rows.self_col, rows.ps, rows.pe
    xq, xg = rows.xq, rows.xg
    lo, scale, F = bins
    B = S.shape[0]
    ng = S.shape[1]
    n_s = row_sides.shape[2]
    T = tw0.shape[1]
    cap = g_key.shape[1]
    kb = np.empty(COLS, np.float64)
    idx = np.empty(COLS, np.int64)
    for r in range(B):
        q2 = qn2[r]
        sc = self_col[r]
        p0 = ps[r]
        p1 = pe[r]
        fq = fold_q[r]
        own = own_side[r]
        row = S[r]
        n = 0
        for c0 in range(0, ng, COLS):
            nk = _below(row, c0, min(ng, c0 + COLS), q2, gn2, l2, limit, kb, idx)
            for t in range(nk):
                j = idx[t]
                if j == sc:
                    continue
                key = kb[t]
                b = _bin(key, lo, scale, F)
                pos = 1 if p0 <= j < p1 else 0
                fg = fold_g[j]
                if own >= 0 and fg == fq:
                    for m in range(T):
                        w = tw0[own, m]
                        if w >= 0 and b < w:
                            own_below[r, m, pos] += 1
                if not flag[b]:
                    continue
                k64 = np.nan
                for k in range(n_s):
                    si = row_sides[r, fg, k]
                    if si < 0:
                        continue
                    for m in range(T):
                        if tw0[si, m] >= 0 and tw0[si, m] <= b <= tw1[si, m]:
                            if k64 != k64:
                                k64 = exact_key(xq[r], xg, j, l2, False, 0.0, 0.0)
                            if n < cap:
                                g_key[r, n] = k64
                                g_code[r, n] = (si * T + m) * 2 + pos
                            n += 1
        g_n[r] = n


@kernel
def id_histograms(S, rows, bins, ids, hist):
    """Histograms of the negative keys of each query row's ids (calibration fits).

    ``ids[r, l]`` (B, L) names the histograms row ``r``'s negatives count in
    (-1: none); ``hist`` (n_ids, F).
    """
    l2, qn2, gn2, self_col, ps, pe = rows.l2, rows.qn2, rows.gn2, rows.self_col, rows.ps, rows.pe
    lo, scale, F = bins
    B = S.shape[0]
    ng = S.shape[1]
    L = ids.shape[1]
    for r in range(B):
        live = False
        for l in range(L):
            if ids[r, l] >= 0:
                live = True
        if not live:
            continue
        q2 = qn2[r]
        sc = self_col[r]
        p0 = ps[r]
        p1 = pe[r]
        for j in range(ng):
            if j == sc or (p0 <= j < p1):
                continue
            b = _bin(_key(S[r, j], q2, gn2[j], l2), lo, scale, F)
            for l in range(L):
                i = ids[r, l]
                if i >= 0:
                    hist[i, b] += 1


@kernel
def id_gather(S, rows, bins, ids, wlo, whi, g_key, g_id, g_n):
    """Gather the float64 keys (``exact_key``) of the negatives whose float32
    key falls in the bracket of bins ``[wlo[i], whi[i]]`` of each of the row's
    ids ``i`` (``wlo[i] < 0``: none; see ``base.bracket_bins``)."""
    l2, qn2, gn2, self_col, ps, pe = rows.l2, rows.qn2, rows.gn2, rows.self_col, rows.ps, rows.pe
    xq, xg = rows.xq, rows.xg
    lo, scale, F = bins
    B = S.shape[0]
    ng = S.shape[1]
    L = ids.shape[1]
    cap = g_key.shape[1]
    for r in range(B):
        n = 0
        live = False
        for l in range(L):
            if ids[r, l] >= 0 and wlo[ids[r, l]] >= 0:
                live = True
        if live:
            q2 = qn2[r]
            sc = self_col[r]
            p0 = ps[r]
            p1 = pe[r]
            xr = xq[r]
            for j in range(ng):
                if j == sc or (p0 <= j < p1):
                    continue
                b = _bin(_key(S[r, j], q2, gn2[j], l2), lo, scale, F)
                k64 = np.nan
                for l in range(L):
                    i = ids[r, l]
                    if i >= 0 and wlo[i] <= b <= whi[i]:
                        if k64 != k64:
                            k64 = exact_key(xr, xg, j, l2, False, 0.0, 0.0)
                        if n < cap:
                            g_key[r, n] = k64
                            g_id[r, n] = i
                        n += 1
        g_n[r] = n
