"""Threshold transfer (SPEC 12): exact counts of several sides in two passes.

``opis calibrate`` asks, for every fold ``k``, what a threshold chosen on
the calibration side ``A_k`` (the rows of the other folds) does on the test
side ``B_k`` (the rows of fold ``k``); each side's pairs lie among its own
rows only. Evaluating the ``2K`` sides one by one would cost about ``K``
full evaluations. Instead every pair is attributed to its *cell*
``(fold of the query, fold of the gallery row)``, and a side is a union of
cells: ``B_k`` is the cell ``(k, k)``, ``A_k`` every cell without fold
``k``. Two passes over all pairs answer every side at once:

1. **histograms**: the keys of every pair, positives and negatives apart,
   into a histogram of ``F`` even bins from the smallest key to the limit below, one per
   cell (rows evaluated in every side that holds them) and one per side
   (the rare rows evaluated in some of those sides only: a class with rows
   in several folds of a group split). A side's histogram is the sum of its
   cells' and its own. This locates the bin of every order statistic
   ``t_S(F)`` (SPEC 5 over the side's negatives) and, for a known
   threshold, its bin;
2. **gather**: every pair whose bin lies in the *bracket* of a *target*'s
   bin (an order statistic, a known distance, or another side's order
   statistic; ``base.bracket_bins``: the bins within two float32 margins)
   is gathered with its float64 key (``base.exact_keys``); the test sides
   also count per query row the pairs below each target's bracket. The
   targets are then resolved exactly from the gathered float64 keys and the
   counts below them (``base.select_in_bracket``).

Both passes look only at the keys below a *limit*: a pilot sample of query
rows puts it above every target with high probability (a few percent of the
pairs lie below it), the kernels compact each row's keys below it before
any histogram or count, and pass 1 runs again over everything if a rank is
not covered, so the limit changes only the speed.

Every decision is that of the float64 keys (SPEC 2, as in the exact
engine), so the result is the same on every CPU and BLAS kernel: the
histograms bin float32 keys, and a float32 key lies within
``base.key_margins`` of its float64 key, so a pair in a bin below (above) a
target's bracket has a float64 key below (above) the target; pairs in the
bracket are decided from their float64 key, ``key_to_dist(key) <= t``.
Both passes compute the same products in the same tiles
(``inner_products``), so a float32 key and its bin are the same bits in
both.

Peak memory (bytes), N rows, D dimensions, w workers, K folds, S sides::

    N*D*4 + w*tile*ng*4          embeddings and the workers' product tiles
    + w*(2*K*K + 2*S)*F*8        pass 1 histograms (F bins: 2**15 up to 5
                                 folds, fewer for more so this stays ~13 MiB)
    + 13 * gathered              pass 2: the pairs in the brackets of the targets

The gathered pairs are a few bins' worth of each side's pairs near its
thresholds: for 25k rows about 10^5, not N^2.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .. import counts
from ..errors import ConfigError
from ..prepare import Prepared
from .base import (DEFAULT_BLOCK_BYTES, Progress, bracket_bins, dist_to_key, key_margins,
                   key_span, key_to_dist, pair_keys, rank_bin, select_in_bracket, value_bins)
from ._tiles import n_workers, run_tiles

#: targets per side: the calibration threshold and the test side's own one
TARGETS = 2


@dataclass(frozen=True)
class Side:
    """Rows of ``folds``, paired among themselves. ``own``: keep per-row
    counts at the targets (the side must then be one fold, and its rows keep
    the counts of their pairs with gallery rows of that fold)."""

    folds: tuple[int, ...]
    own: bool = False


@dataclass(frozen=True)
class Target:
    """A threshold of a side: the ``rank``-th smallest negative distance of
    the side (SPEC 5), a known ``value`` (a distance), or the resolved
    threshold of target ``same`` = ``(side, target)`` of another side."""

    rank: int | None = None
    value: float | None = None
    same: tuple[int, int] | None = None


@dataclass(frozen=True)
class SideCounts:
    """One side: its per-class pair totals and evaluated classes, and at each
    of its targets the threshold and the TP/FP counts of its evaluated
    classes (per class when the side is ``own``)."""

    positives: np.ndarray          # (C,) P_c on this side
    negatives: np.ndarray          # (C,) M_c on this side
    evaluated: np.ndarray          # (C,) bool
    thresholds: tuple[float, ...]  # per target (NaN where none)
    tp: tuple[int, ...]            # per target, over the evaluated classes
    fp: tuple[int, ...]
    class_tp: tuple[np.ndarray, ...] | None = None  # per target (C,) if own
    class_fp: tuple[np.ndarray, ...] | None = None
    row_tp: tuple[np.ndarray, ...] | None = None    # per target (nq,) if own: per query
    row_fp: tuple[np.ndarray, ...] | None = None    # row (0 outside the side's evaluated rows)


def side_row_pairs(prep: Prepared, fold_q: np.ndarray, fold_g: np.ndarray,
                   folds: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Positive and negative pairs (nq,) of every query row among the rows of
    ``folds`` (0 for a query outside them)."""
    C = prep.n_classes
    fl = np.asarray(folds)
    qm = np.isin(fold_q, fl)
    gm = np.isin(fold_g, fl)
    ng_c = np.bincount(prep.g_class[gm], minlength=C)
    self_in = (prep.self_col >= 0) & gm[np.maximum(prep.self_col, 0)]
    pos = (ng_c[prep.q_class] - self_in) * qm
    neg = (int(gm.sum()) - ng_c[prep.q_class]) * qm
    return pos.astype(np.int64), neg.astype(np.int64)


def side_pair_counts(prep: Prepared, fold_q: np.ndarray, fold_g: np.ndarray,
                     folds: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``P_c`` and ``M_c`` (SPEC 3) of every class among the rows of ``folds``."""
    pos, neg = side_row_pairs(prep, fold_q, fold_g, folds)
    C = prep.n_classes
    P = np.bincount(prep.q_class, weights=pos, minlength=C).astype(np.int64)
    M = np.bincount(prep.q_class, weights=neg, minlength=C).astype(np.int64)
    return P, M


def _bins_for(K: int) -> int:
    """Pass 1 bins: 2**15 (one cell's histogram, 256 KiB, stays in a core's L2
    cache while a row's gallery run of one fold is read), fewer for many folds
    so that all cells stay about 13 MiB per worker."""
    F = 2**15
    while F > 2**10 and K * K * F > 25 * 2**15:
        F //= 2
    return F


#: query rows of the pilot that bounds the keys the passes need
PILOT_ROWS = 1024


def _pilot_limit(prep: Prepared, live: np.ndarray, sides, targets, totals, ev_class, l2: bool,
                 lo: float, hi: float) -> float:
    """A key above every target with high probability, from a pilot sample.

    Up to PILOT_ROWS evenly spaced live query rows against evenly spaced
    gallery columns (about 2 million keys) give a sample of negative keys; for rank targets (at most a fraction
    ``f`` of a side's negatives) the limit is that sample's ``3 f + 0.02``
    quantile, for value targets their key and a margin. Pass 1 counts only
    keys below it and runs again over everything when a rank is not covered,
    so results never depend on the pilot; only the speed does.
    """
    fracs, values = [], []
    for s, tl in enumerate(targets):
        P, M = totals[s]
        m = int(M[ev_class[:, s]].sum())
        for tg in tl:
            if tg.rank is not None:
                fracs.append(tg.rank / max(m, 1))
            elif tg.value is not None:
                values.append(float(dist_to_key(float(tg.value), l2)))
    limit = lo
    if values:
        limit = max(values) + 1e-3 * (hi - lo)
    if fracs:
        q = 3 * max(fracs) + 0.02
        rows = np.nonzero(live)[0]
        if q >= 0.5 or len(rows) == 0:
            return hi
        pick = rows[np.unique(np.linspace(0, len(rows) - 1, min(PILOT_ROWS, len(rows)))
                              .astype(np.int64))]
        ng = len(prep.g_rows)
        # evenly spaced gallery columns: at most about 2 million keys in all
        cols = np.arange(0, ng, max(1, -(-len(pick) * ng // 2_000_000)))
        xg_cols, gn2_cols = prep.xg[cols], prep.gn2[cols]
        vals = []
        from .exact import _one_blas_thread

        with _one_blas_thread():
            for a in range(0, len(pick), 256):
                sub = pick[a:a + 256]
                k = pair_keys(prep.xq[sub] @ xg_cols.T, prep.qn2[sub], gn2_cols, l2)
                cls = prep.q_class[sub]
                neg = ~((cols[None, :] >= prep.class_start[cls][:, None])
                        & (cols[None, :] < prep.class_end[cls][:, None]))
                neg &= cols[None, :] != prep.self_col[sub][:, None]
                vals.append(k[neg])
        v = np.concatenate(vals)
        if len(v) < 1000:
            return hi
        limit = max(limit, float(np.quantile(v, q)))
    return min(hi, limit) if limit > lo else hi


def run_transfer(prep: Prepared, fold_q: np.ndarray, fold_g: np.ndarray, K: int,
                 sides: list[Side], targets: list[list[Target]],
                 block_bytes: int = DEFAULT_BLOCK_BYTES,
                 progress: Progress | None = None) -> list[SideCounts]:
    """Exact counts of every side at its targets (module docstring).

    ``fold_q``/``fold_g`` are the folds of the prepared queries and gallery
    rows (in ``prep``'s order), in ``[0, K)``; ``targets[s]`` lists at most
    ``TARGETS`` targets of side ``s``. A rank target needs the side's
    negatives to hold that rank.
    """
    from . import _transfer_kernels as kern

    nS = len(sides)
    nq = len(prep.q_rows)
    C = prep.n_classes
    fold_q = np.ascontiguousarray(fold_q, np.int64)
    fold_g = np.ascontiguousarray(fold_g, np.int64)
    # sides holding each cell, and where each row is evaluated
    holds = np.zeros((nS, K), bool)
    for s, side in enumerate(sides):
        holds[s, list(side.folds)] = True
        if side.own and len(side.folds) != 1:
            raise ValueError("a side with per-row counts is one fold")
    cell_sides = np.full((K, K, nS), -1, np.int64)
    for s in range(nS):
        both = holds[s][:, None] & holds[s][None, :]
        cell_sides[both, s] = s
    totals = [side_pair_counts(prep, fold_q, fold_g, side.folds) for side in sides]
    ev_class = np.stack([counts.evaluated(P, M) for P, M in totals], axis=1)  # (C, nS)
    ev = ev_class[prep.q_class] & holds[:, fold_q].T  # (nq, nS)
    holding = holds[:, fold_q].T
    n_hold = holding.sum(axis=1)
    n_ev = ev.sum(axis=1)
    row_mode = np.where(n_ev == 0, 0, np.where(n_ev == n_hold, 1, 2)).astype(np.int64)
    own_side = np.full(nq, -1, np.int64)
    for s, side in enumerate(sides):
        if side.own:
            own_side[(fold_q == side.folds[0]) & ev[:, s]] = s

    l2 = prep.metric == "l2"
    k_lo, k_hi = key_span(prep)
    w = k_hi - k_lo
    lo, hi = k_lo - 1e-3 * w - 1e-9, k_hi + 1e-3 * w + 1e-9
    F = _bins_for(K)
    # the histograms need only the keys below every target: a pilot bounds them
    limit = _pilot_limit(prep, ev.any(axis=1), sides, targets, totals, ev_class, l2, lo, hi)
    workers = n_workers(prep, block_bytes)
    qs = prep.class_start[prep.q_class]
    qe = prep.class_end[prep.q_class]

    def tile_sides(s: int, e: int) -> np.ndarray:
        """(B, K, nS): the sides holding each (row, gallery fold) where the row is evaluated."""
        rs = cell_sides[fold_q[s:e]]  # (B, K, nS)
        ok = ev[s:e][:, None, :] & (rs >= 0)
        return np.where(ok, rs, -1)

    def passes(stage: str, body: Callable[[int, np.ndarray, int, int], None]) -> None:
        run_tiles(prep, row_mode > 0, block_bytes, stage, progress, body)

    # -- pass 1: histograms of the keys below the limit ------------------------------
    while True:
        scale = F / (limit - lo)
        cell_pos = np.zeros((workers, K * K, F), np.int64)
        cell_neg = np.zeros_like(cell_pos)
        side_pos = np.zeros((workers, nS, F), np.int64)
        side_neg = np.zeros_like(side_pos)

        def hist_body(slot, S, s, e):
            kern.cell_histograms(S, l2, prep.qn2[s:e], prep.gn2, prep.self_col[s:e], qs[s:e],
                                 qe[s:e], fold_q[s:e], fold_g, K, row_mode[s:e],
                                 tile_sides(s, e), lo, scale, F, limit, cell_pos[slot],
                                 cell_neg[slot], side_pos[slot], side_neg[slot])

        passes("histograms", hist_body)
        cp, cn = cell_pos.sum(axis=0), cell_neg.sum(axis=0)
        h_pos = side_pos.sum(axis=0)
        h_neg = side_neg.sum(axis=0)
        for s in range(nS):
            cells = np.nonzero((cell_sides[:, :, s] >= 0).ravel())[0]
            h_pos[s] += cp[cells].sum(axis=0)
            h_neg[s] += cn[cells].sum(axis=0)
        del cp, cn, cell_pos, cell_neg
        covered = all(tg.rank is None or tg.rank <= h_neg[s].sum()
                      for s in range(nS) for tg in targets[s])
        if covered or limit >= hi:
            break
        limit = hi  # the pilot's limit missed a rank: everything (results never depend on it)
    # -- target windows ----------------------------------------------------------------
    T = TARGETS
    tw0 = np.full((nS, T), -1, np.int64)
    tw1 = np.full((nS, T), -1, np.int64)
    center = np.full((nS, T), -1, np.int64)
    for s in range(nS):
        for m, tg in enumerate(targets[s]):
            if tg.rank is not None:
                found = rank_bin(h_neg[s], int(tg.rank))
                if found is None:
                    raise ConfigError(f"internal: rank {tg.rank} outside the side's negatives")
                center[s, m] = found[0]
            elif tg.value is not None:
                key = dist_to_key(float(tg.value), l2)
                center[s, m] = int(value_bins(np.array([key]), lo, scale, F)[0])
    for s in range(nS):
        for m, tg in enumerate(targets[s]):
            if tg.same is not None:
                center[s, m] = center[tg.same]
    has = center >= 0
    # each target's float64 key lies in the bracket of its float32 bin
    m_max = float(key_margins(prep).max()) if nq else 0.0
    pad = bracket_bins(m_max, scale)
    tw0[has] = np.maximum(center[has] - pad, 0)
    tw1[has] = np.minimum(center[has] + pad, F - 1)
    # a float32 key above the limit (in the top bin) may belong to a bracket there
    limit2 = min(hi, limit + 2 * m_max + 1e-12 * (abs(limit) + 1)) if limit < hi else limit
    flag = np.zeros(F, np.bool_)
    for s in range(nS):
        for m in range(T):
            if has[s, m]:
                flag[tw0[s, m]:tw1[s, m] + 1] = True

    # -- pass 2: gather --------------------------------------------------------------
    own_below = np.zeros((nq, T, 2), np.int64)
    gathered: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    lock = threading.Lock()
    caps = [64] * workers

    def gather_body(slot, S, s, e):
        B = e - s
        rs = tile_sides(s, e)
        while True:
            cap = caps[slot]
            g_key = np.empty((B, cap), np.float64)
            g_code = np.empty((B, cap), np.int32)
            g_n = np.zeros(B, np.int64)
            below = np.zeros((B, T, 2), np.int64)
            kern.gather_targets(S, l2, prep.qn2[s:e], prep.gn2, prep.self_col[s:e], qs[s:e],
                                qe[s:e], fold_q[s:e], fold_g, rs, lo, scale, F, limit2, flag,
                                tw0, tw1, own_side[s:e], below, prep.xq[s:e], prep.xg, g_key,
                                g_code, g_n)
            need = int(g_n.max()) if B else 0
            if need <= cap:
                break
            caps[slot] = 2 * need  # rare: run the tile again with room for its rows
        own_below[s:e] = below
        if need:
            mask = np.arange(cap)[None, :] < g_n[:, None]
            rows = np.nonzero(mask)[0] + s
            with lock:
                gathered.append((rows, g_key[mask], g_code[mask]))

    passes("thresholds", gather_body)
    if gathered:
        g_rows = np.concatenate([g[0] for g in gathered])
        g_key = np.concatenate([g[1] for g in gathered])
        g_code = np.concatenate([g[2] for g in gathered])
    else:
        g_rows = np.zeros(0, np.int64)
        g_key = np.zeros(0)
        g_code = np.zeros(0, np.int32)
    g_pos = (g_code % 2).astype(bool)
    g_tgt = g_code // 2
    # the selections are order-independent: sort once so results never depend
    # on which worker gathered what
    order = np.lexsort((g_rows, g_key, g_tgt))
    g_rows, g_key, g_pos, g_tgt = g_rows[order], g_key[order], g_pos[order], g_tgt[order]
    g_dist = np.asarray(key_to_dist(g_key, l2), np.float64)

    # -- resolve ---------------------------------------------------------------------
    resolved = np.full((nS, T), np.nan)

    def resolve(s: int, m: int) -> float:
        if not np.isnan(resolved[s, m]):
            return float(resolved[s, m])
        tg = targets[s][m]
        if tg.same is not None:
            t = resolve(*tg.same)
        elif tg.value is not None:
            t = float(tg.value)
        else:
            sel = (g_tgt == s * T + m) & ~g_pos
            below = int(h_neg[s, :tw0[s, m]].sum())
            t = float(key_to_dist(select_in_bracket(g_key[sel], int(tg.rank), below), l2))
        resolved[s, m] = t
        return t

    out = []
    for s, side in enumerate(sides):
        P, M = totals[s]
        th, tps, fps, ctp, cfp, rtp, rfp = [], [], [], [], [], [], []
        for m in range(T):
            if m >= len(targets[s]):
                th.append(float("nan"))
                tps.append(0)
                fps.append(0)
                continue
            t = resolve(s, m)
            sel = g_tgt == s * T + m
            acc = sel & (g_dist <= t)
            b0 = tw0[s, m]
            tp = int(h_pos[s, :b0].sum()) + int((acc & g_pos).sum())
            fp = int(h_neg[s, :b0].sum()) + int((acc & ~g_pos).sum())
            th.append(t)
            tps.append(tp)
            fps.append(fp)
            if side.own:
                mine = own_side == s
                row_tp = own_below[:, m, 1] * mine
                row_fp = own_below[:, m, 0] * mine
                row_tp = row_tp + np.bincount(g_rows[acc & g_pos], minlength=nq)
                row_fp = row_fp + np.bincount(g_rows[acc & ~g_pos], minlength=nq)
                ctp.append(np.bincount(prep.q_class, weights=row_tp, minlength=C).astype(np.int64))
                cfp.append(np.bincount(prep.q_class, weights=row_fp, minlength=C).astype(np.int64))
                rtp.append(row_tp)
                rfp.append(row_fp)
        out.append(SideCounts(
            positives=P, negatives=M, evaluated=ev_class[:, s], thresholds=tuple(th),
            tp=tuple(tps), fp=tuple(fps),
            class_tp=tuple(ctp) if side.own else None, class_fp=tuple(cfp) if side.own else None,
            row_tp=tuple(rtp) if side.own else None, row_fp=tuple(rfp) if side.own else None))
    return out
