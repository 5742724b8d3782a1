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


@nb.njit(cache=True, nogil=True, inline="always")
def _bin(key, lo, scale, nbins):
    b = int((key - lo) * scale)
    if b < 0:
        return 0
    if b >= nbins:
        return nbins - 1
    return b


@nb.njit(cache=True, nogil=True, inline="always")
def _before(k1, o1, k2, o2):
    """(k1, o1) ranks before (k2, o2): by key, ties by original row."""
    return k1 < k2 or (k1 == k2 and o1 < o2)


@nb.njit(cache=True, nogil=True)
def _sift_down(hk, ho, hp, n, i):
    """Restore the max-heap (by key, then row) below position ``i``."""
    while True:
        left = 2 * i + 1
        if left >= n:
            return
        big = left
        right = left + 1
        if right < n and _before(hk[left], ho[left], hk[right], ho[right]):
            big = right
        if _before(hk[i], ho[i], hk[big], ho[big]):
            hk[i], hk[big] = hk[big], hk[i]
            ho[i], ho[big] = ho[big], ho[i]
            hp[i], hp[big] = hp[big], hp[i]
            i = big
        else:
            return


@nb.njit(cache=True, nogil=True)
def _sift_up(hk, ho, hp, i):
    while i > 0:
        parent = (i - 1) // 2
        if _before(hk[parent], ho[parent], hk[i], ho[i]):
            hk[i], hk[parent] = hk[parent], hk[i]
            ho[i], ho[parent] = ho[parent], ho[i]
            hp[i], hp[parent] = hp[parent], hp[i]
            i = parent
        else:
            return


@nb.njit(cache=True, nogil=True, inline="always")
def _cell(key, K, lo_b, hi_b, base, inv_step):
    """Grid cell of ``key`` (first k with t_k >= key), or -1 if undecided.

    ``lo_b[k] <= t_k <= hi_b[k]``; the caller has checked ``key <= hi_b[-1]``.
    """
    if key <= lo_b[0]:
        return 0
    k = int(np.ceil((key - base) * inv_step))  # the grid is even: usually exact
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
    if k == jmin:
        return jmin
    return -1


@nb.njit(cache=True, nogil=True)
def _keys_row(row, l2, qn, gn2, kb):
    if l2:
        for j in range(row.shape[0]):
            kb[j] = qn + gn2[j] - 2.0 * np.float64(row[j])
    else:
        for j in range(row.shape[0]):
            kb[j] = 1.0 - np.float64(row[j])


@nb.njit(cache=True, nogil=True)
def _compact(kb, j0, j1, limit, idx):
    """Indices j in [j0, j1) with kb[j] <= limit, written to idx; returns their number.

    Branch-free (every index is written, the count advances by the test), so
    the scan costs the same whatever the data: no mispredicted branches.
    """
    n = 0
    for j in range(j0, j1):
        idx[n] = j
        n += kb[j] <= limit
    return n


@nb.njit(cache=True, nogil=True)
def _order_stat_row(kb, j0, j1, win_lo, win_hi, win_scale, F, below, hist, idx):
    """Per window w: count keys < win_lo[w], histogram keys in [win_lo, win_hi)."""
    n = _compact(kb, j0, j1, win_hi.max(), idx)
    W = win_lo.shape[0]
    for i in range(n):
        key = kb[idx[i]]
        for w in range(W):
            lo = win_lo[w]
            below[w] += key < lo
            inside = (key >= lo) & (key < win_hi[w])
            hist[w, _bin(key, lo, win_scale[w], F)] += inside


@nb.njit(cache=True, nogil=True)
def _report_hist(kb, sc, ps, pe, lo, scale, RB, hpos, hneg):
    for j in range(kb.shape[0]):
        if j == sc:
            continue
        b = _bin(kb[j], lo, scale, RB)
        if ps <= j < pe:
            hpos[b] += 1
        else:
            hneg[b] += 1


@nb.njit(cache=True, nogil=True)
def _counts_row(kb, ps, pe, key_skip, K, lo_b, hi_b, base, inv_step, call, cpos,
                dval, dpos, gather, win_lo, win_hi, win_scale, F, gat_win, gat_bin, gval, idx):
    """Grid cells of one row; returns (deferred, gathered) element counts."""
    for k in range(K):
        call[k] = 0
        cpos[k] = 0
    cap_d = dval.shape[0]
    cap_g = gval.shape[0]
    nd = 0
    ng = 0
    n = _compact(kb, 0, kb.shape[0], key_skip, idx)
    for i in range(n):
        j = idx[i]
        key = kb[j]
        c = _cell(key, K, lo_b, hi_b, base, inv_step)
        if c >= 0:
            call[c] += 1
        else:
            if nd < cap_d:
                dval[nd] = key
                dpos[nd] = ps <= j < pe
            nd += 1
        if gather and not (ps <= j < pe):
            for g in range(2):
                w = gat_win[g]
                if win_lo[w] <= key < win_hi[w] and \
                        _bin(key, win_lo[w], win_scale[w], F) == gat_bin[g]:
                    if ng < cap_g:
                        gval[ng] = key
                    ng += 1
                    break
    for j in range(ps, pe):
        key = kb[j]
        if key <= key_skip:
            c = _cell(key, K, lo_b, hi_b, base, inv_step)
            if c >= 0:
                cpos[c] += 1
    return nd, ng


@nb.njit(cache=True, nogil=True)
def _retrieval_row(kb, sc, ps, pe, g_orig):
    """(R, rank of the first positive, AP@R) of one row; see process_block."""
    Ng = kb.shape[0]
    R = pe - ps
    if ps <= sc < pe:
        R -= 1
    if R <= 0:
        return R, 0, 0.0
    avail = Ng - 1 if sc >= 0 else Ng
    hsize = min(max(R, 8), avail)
    hk = np.empty(hsize, np.float64)
    ho = np.empty(hsize, np.int64)
    hp = np.empty(hsize, np.bool_)
    hn = 0
    j = 0
    while hn < hsize:
        if j != sc:
            hk[hn] = kb[j]
            ho[hn] = g_orig[j]
            hp[hn] = ps <= j < pe
            _sift_up(hk, ho, hp, hn)
            hn += 1
        j += 1
    top = hk[0]
    for jj in range(j, Ng):
        key = kb[jj]
        if key <= top:  # self is +inf, never here
            o = g_orig[jj]
            if _before(key, o, hk[0], ho[0]):
                hk[0] = key
                ho[0] = o
                hp[0] = ps <= jj < pe
                _sift_down(hk, ho, hp, hn, 0)
                top = hk[0]
    # pop the heap, largest first, filling the ranking from the back
    order_p = np.empty(hn, np.bool_)
    m = hn
    while m > 0:
        order_p[m - 1] = hp[0]
        m -= 1
        hk[0] = hk[m]
        ho[0] = ho[m]
        hp[0] = hp[m]
        _sift_down(hk, ho, hp, m, 0)
    found = 0
    first = hn + 1  # beyond every k that is reported
    total = 0.0
    for i in range(hn):
        if order_p[i]:
            found += 1
            if found == 1:
                first = i + 1
            if i < R:
                total += found / (i + 1)
    return R, first, total / R


@nb.njit(parallel=True, cache=True, nogil=True)
def process_block(
    S, l2, qn2, gn2, self_col, pos_start, pos_end, row_eval, row_sample, g_orig,
    # order statistic: per window w, count negatives with key < win_lo[w] and
    # histogram those in [win_lo[w], win_hi[w]) into F bins (per thread)
    do_win, win_lo, win_hi, win_scale, F, win_below, win_hist,
    # coarse histogram of all keys of sampled rows, for the report (per thread)
    do_rep, r_lo, r_scale, RB, rep_pos, rep_neg,
    # gather negative keys in bin gat_bin[i] of window gat_win[i] (i = 0, 1)
    do_gather, gat_win, gat_bin, gath_val, gath_n,
    # per-row threshold counts with (possibly uncertain) key bounds of the grid
    do_counts, lo_b, hi_b, base, inv_step, cnt_all, cnt_pos, def_val, def_pos, def_n,
    # retrieval: rank of the first positive and AP@R
    do_ret, first_rank, ap, n_rel,
):
    """Process one block of queries; see the module docstring for conventions.

    Outputs indexed by block row (``cnt_*``, ``def_*``, ``gath_*``,
    ``first_rank``, ``ap``, ``n_rel``) are overwritten for every row; the
    histograms (first axis: thread) accumulate across calls, one slice per
    thread so that no two threads write the same memory.

    Each row is handled in phases, each a tight loop over the row's keys
    (computed once, vectorised): the rare work (an element inside a range of
    interest) sits behind one well-predicted comparison.

    Deferred elements (whose grid cell cannot be decided because the grid is
    only known within ``[lo_b, hi_b]``) and gathered elements are written up
    to the buffer capacity; ``def_n``/``gath_n`` always hold the true number,
    so the caller can detect an overflow and run the block again with larger
    buffers.

    Retrieval keeps, per row, a max-heap of the ``k = max(R, 8)`` nearest
    gallery items by (key, original row): one comparison per element once the
    heap is full, like a k-NN search.
    """
    B, Ng = S.shape
    T = win_below.shape[0]
    K = lo_b.shape[0]
    chunk = (B + T - 1) // T
    key_skip = hi_b[K - 1]
    for t in nb.prange(T):
        r0 = t * chunk
        r1 = min(B, r0 + chunk)
        kb = np.empty(Ng, np.float64)
        idx = np.empty(Ng + 1, np.int32)
        for r in range(r0, r1):
            ps = pos_start[r]
            pe = pos_end[r]
            sc = self_col[r]
            qn = qn2[r]
            ev = row_eval[r]
            row = S[r]
            _keys_row(row, l2, qn, gn2, kb)
            if sc >= 0:
                kb[sc] = np.inf  # never paired with itself: above every threshold
            if do_rep and ev and row_sample[r]:
                _report_hist(kb, sc, ps, pe, r_lo, r_scale, RB, rep_pos[t], rep_neg[t])
            if do_win and ev:
                # negatives are [0, ps) and [pe, Ng)
                _order_stat_row(kb, 0, ps, win_lo, win_hi, win_scale, F, win_below[t],
                                win_hist[t], idx)
                _order_stat_row(kb, pe, Ng, win_lo, win_hi, win_scale, F, win_below[t],
                                win_hist[t], idx)
            if do_gather:
                gath_n[r] = 0
            if do_counts:
                nd, ng_ = _counts_row(kb, ps, pe, key_skip, K, lo_b, hi_b, base, inv_step,
                                      cnt_all[r], cnt_pos[r], def_val[r], def_pos[r],
                                      do_gather and ev, win_lo, win_hi, win_scale, F, gat_win,
                                      gat_bin, gath_val[r], idx)
                def_n[r] = nd
                if do_gather:
                    gath_n[r] = ng_
            if do_ret:
                R, first, apr = _retrieval_row(kb, sc, ps, pe, g_orig)
                n_rel[r] = R
                first_rank[r] = first
                ap[r] = apr


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
