"""Compiled per-block kernels of the exact engine (the only numba import).

Every kernel works on one block ``S`` of inner products between a block of
queries and the whole gallery, as produced by a BLAS matrix product, and turns
them into a *key* that is monotone in the distance:

* cosine: ``key = d = 1 - <q, g>`` (rows already L2-normalised);
* l2: ``key = d**2 = |q|^2 + |g|^2 - 2 <q, g>`` (squared distance).

Keys are computed in float64 from the float32 products so that comparisons
with the float64 threshold grid are made once, in one precision.

Gallery columns are sorted by (class, original row), so the positives of a
query are the contiguous slice ``[ps, pe)``; ``self_col`` is the column of the
query's own row (or -1), never paired with it (SPEC 3).
"""

from __future__ import annotations

import numba as nb
import numpy as np


def num_threads() -> int:
    """Number of worker threads numba will use."""
    return nb.get_num_threads()


@nb.njit(cache=True, nogil=True, inline="always")
def _key(s, qn2, gn2, l2):
    if l2:
        return qn2 + gn2 - 2.0 * s
    return 1.0 - s


@nb.njit(parallel=True, cache=True, nogil=True)
def process_block(
    S, l2, qn2, gn2, self_col, pos_start, pos_end, row_eval, g_orig,
    # distance histogram (H bins) of evaluated rows, per thread, or disabled
    do_hist, h_lo, h_scale, H, hist_pos, hist_neg,
    # gather negatives falling in histogram bins b0/b1 (order statistic)
    do_gather, b0, b1, gath_val, gath_n,
    # per-row threshold counts with (possibly uncertain) key bounds of the grid
    do_counts, lo_b, hi_b, base, inv_step, cnt_all, cnt_pos, def_val, def_pos, def_n,
    # retrieval: rank of the first positive and AP@R
    do_ret, first_rank, ap, n_rel,
):
    """Process one block of queries; see module docstring for the conventions.

    Outputs indexed by block row (``cnt_*``, ``def_*``, ``gath_*``,
    ``first_rank``, ``ap``, ``n_rel``) are overwritten for every row; the
    histograms ``hist_*`` (shape (T, H)) accumulate across calls, one row per
    thread so that no two threads write the same memory.

    Deferred elements (whose grid index cannot be decided because the grid is
    only known within ``[lo_b, hi_b]``) and gathered elements are written up
    to the buffer capacity; ``def_n``/``gath_n`` always hold the true number,
    so the caller can detect an overflow and run the block again with larger
    buffers.
    """
    B, Ng = S.shape
    T = hist_pos.shape[0]
    K = lo_b.shape[0]
    cap_d = def_val.shape[1]
    cap_g = gath_val.shape[1]
    chunk = (B + T - 1) // T
    key_skip = hi_b[K - 1] if K > 0 else -np.inf
    for t in nb.prange(T):
        r0 = t * chunk
        r1 = min(B, r0 + chunk)
        for r in range(r0, r1):
            ps = pos_start[r]
            pe = pos_end[r]
            sc = self_col[r]
            qn = qn2[r]
            ev = row_eval[r]
            row = S[r]
            if do_counts:
                for k in range(K):
                    cnt_all[r, k] = 0
                    cnt_pos[r, k] = 0
                def_n[r] = 0
            if do_gather:
                gath_n[r] = 0
            # --- retrieval set-up: positives sorted by (key, original row)
            R = 0
            if do_ret:
                R = pe - ps
                if ps <= sc < pe:
                    R -= 1
                n_rel[r] = R
                first_rank[r] = 0
                ap[r] = 0.0
            pk = np.empty(max(R, 1), np.float64)
            po = np.empty(max(R, 1), np.int64)
            cntb = np.zeros(max(R, 1), np.int64)
            pmax_k = -np.inf
            pmax_o = -1
            if R > 0:
                tmp_k = np.empty(R, np.float64)
                tmp_o = np.empty(R, np.int64)
                m = 0
                for j in range(ps, pe):
                    if j == sc:
                        continue
                    tmp_k[m] = _key(np.float64(row[j]), qn, gn2[j], l2)
                    tmp_o[m] = g_orig[j]
                    m += 1
                # columns are in original-row order, so a stable sort on the
                # key alone orders ties by original row
                order = np.argsort(tmp_k, kind="mergesort")
                for i in range(R):
                    pk[i] = tmp_k[order[i]]
                    po[i] = tmp_o[order[i]]
                pmax_k = pk[R - 1]
                pmax_o = po[R - 1]
            # --- one sweep over the gallery
            for j in range(Ng):
                if j == sc:
                    continue
                key = _key(np.float64(row[j]), qn, gn2[j], l2)
                pos = ps <= j < pe
                if ev and (do_hist or do_gather):
                    b = int((key - h_lo) * h_scale)
                    if b < 0:
                        b = 0
                    elif b >= H:
                        b = H - 1
                    if do_hist:
                        if pos:
                            hist_pos[t, b] += 1
                        else:
                            hist_neg[t, b] += 1
                    if do_gather and not pos and (b == b0 or b == b1):
                        n = gath_n[r]
                        if n < cap_g:
                            gath_val[r, n] = key
                        gath_n[r] = n + 1
                if do_counts and key <= key_skip:
                    if key <= lo_b[0]:
                        jmin = 0
                        jmax = 0
                    else:
                        k = int((key - base) * inv_step)
                        if k < 0:
                            k = 0
                        elif k > K - 1:
                            k = K - 1
                        while k > 0 and hi_b[k - 1] >= key:
                            k -= 1
                        while k < K and hi_b[k] < key:
                            k += 1
                        jmin = k
                        while k < K and lo_b[k] < key:
                            k += 1
                        jmax = k
                    if jmin == jmax:
                        cnt_all[r, jmin] += 1
                        if pos:
                            cnt_pos[r, jmin] += 1
                    else:
                        n = def_n[r]
                        if n < cap_d:
                            def_val[r, n] = key
                            def_pos[r, n] = pos
                        def_n[r] = n + 1
                if R > 0 and not pos:
                    o = g_orig[j]
                    if key < pmax_k or (key == pmax_k and o < pmax_o):
                        lo = 0
                        hi = R
                        while lo < hi:
                            mid = (lo + hi) >> 1
                            if pk[mid] < key or (pk[mid] == key and po[mid] < o):
                                lo = mid + 1
                            else:
                                hi = mid
                        cntb[lo] += 1
            if R > 0:
                acc = 0
                total = 0.0
                for i in range(R):
                    acc += cntb[i]
                    rank = i + 1 + acc
                    if i == 0:
                        first_rank[r] = rank
                    if rank > R:
                        break
                    total += (i + 1) / rank
                ap[r] = total / R


@nb.njit(cache=True)
def aggregate_rows(cnt, ids, n_ids, out):
    """``out[ids[r], :] += cnt[r, :]`` for every row (serial, exact integers)."""
    B, K = cnt.shape
    for r in range(B):
        i = ids[r]
        if i < 0 or i >= n_ids:
            continue
        for k in range(K):
            out[i, k] += cnt[r, k]
