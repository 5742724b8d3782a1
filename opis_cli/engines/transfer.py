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

import numpy as np

from .. import counts
from ..errors import ConfigError
from ..prepare import Prepared
from .base import (DEFAULT_BLOCK_BYTES, Progress, bracket_bins, dist_to_key, key_margins,
                   key_span, key_to_dist)
from .select import (KeyBins, bracket, bracket_at, gather_rows, padded_span, pilot_columns,
                     pilot_negative_keys, pilot_rows)
from .workers import n_workers, run_tiles

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


def _pilot_limit(prep: Prepared, live: np.ndarray, targets, totals, ev_class, l2: bool,
                 lo: float, hi: float) -> float:
    """A key above every target with high probability, from a pilot sample.

    Up to PILOT_ROWS evenly spaced live query rows against evenly spaced
    gallery columns (about 2 million keys, ``select.pilot_negative_keys``)
    give a sample of negative keys; for rank targets (at most a fraction
    ``f`` of a side's negatives) the limit is that sample's ``3 f + 0.02``
    quantile, for value targets their key and a margin. Pass 1 counts only
    keys below it and runs again over everything when a rank is not covered,
    so results never depend on the pilot; only the speed does.
    """
    fracs, values = [], []
    for s, tl in enumerate(targets):
        m = int(totals[s][1][ev_class[:, s]].sum())
        for tg in tl:
            if tg.rank is not None:
                fracs.append(tg.rank / max(m, 1))
            elif tg.value is not None:
                values.append(float(dist_to_key(float(tg.value), l2)))
    limit = max(values) + 1e-3 * (hi - lo) if values else lo
    if fracs:
        q = 3 * max(fracs) + 0.02
        rows = np.nonzero(live)[0]
        if q >= 0.5 or len(rows) == 0:
            return hi
        pick = pilot_rows(rows, PILOT_ROWS)
        v = pilot_negative_keys(prep, pick, pilot_columns(len(pick), len(prep.g_rows), 2_000_000))
        if len(v) < 1000:
            return hi
        limit = max(limit, float(np.quantile(v, q)))
    return min(hi, limit) if limit > lo else hi


@dataclass(frozen=True)
class _Layout:
    """Where each side's pairs are: the sides holding each (query fold,
    gallery fold) cell, each side's totals and evaluated classes, and how each
    query row is evaluated."""

    K: int
    cell_sides: np.ndarray  # (K, K, nS): s where side s holds the cell, else -1
    totals: list            # per side (P, M), SPEC 3
    ev_class: np.ndarray    # (C, nS) bool
    ev: np.ndarray          # (nq, nS) bool: the row is evaluated on the side
    row_mode: np.ndarray    # (nq,) 0 evaluated nowhere, 1 on every side holding it, 2 on some
    own_side: np.ndarray    # (nq,) the own side evaluating the row, else -1

    @classmethod
    def of(cls, prep: Prepared, fold_q, fold_g, K: int, sides: list[Side]) -> "_Layout":
        nS = len(sides)
        holds = np.zeros((nS, K), bool)
        for s, side in enumerate(sides):
            holds[s, list(side.folds)] = True
            if side.own and len(side.folds) != 1:
                raise ValueError("a side with per-row counts is one fold")
        cell_sides = np.full((K, K, nS), -1, np.int64)
        for s in range(nS):
            cell_sides[holds[s][:, None] & holds[s][None, :], s] = s
        totals = [side_pair_counts(prep, fold_q, fold_g, side.folds) for side in sides]
        ev_class = np.stack([counts.evaluated(P, M) for P, M in totals], axis=1)
        ev = ev_class[prep.q_class] & holds[:, fold_q].T
        n_hold = holds[:, fold_q].T.sum(axis=1)
        n_ev = ev.sum(axis=1)
        row_mode = np.where(n_ev == 0, 0, np.where(n_ev == n_hold, 1, 2)).astype(np.int64)
        own_side = np.full(len(prep.q_rows), -1, np.int64)
        for s, side in enumerate(sides):
            if side.own:
                own_side[(fold_q == side.folds[0]) & ev[:, s]] = s
        return cls(K, cell_sides, totals, ev_class, ev, row_mode, own_side)

    def tile_sides(self, fold_q: np.ndarray, s: int, e: int) -> np.ndarray:
        """(B, K, nS): the sides holding each (row, gallery fold) where the row is evaluated."""
        rs = self.cell_sides[fold_q[s:e]]
        return np.where(self.ev[s:e][:, None, :] & (rs >= 0), rs, -1)


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
    fold_q = np.ascontiguousarray(fold_q, np.int64)
    fold_g = np.ascontiguousarray(fold_g, np.int64)
    lay = _Layout.of(prep, fold_q, fold_g, K, sides)
    l2 = prep.metric == "l2"
    lo, hi = padded_span(key_span(prep))
    # the histograms need only the keys below every target: a pilot bounds them
    limit = _pilot_limit(prep, lay.ev.any(axis=1), targets, lay.totals, lay.ev_class, l2, lo, hi)
    kb, limit, h_pos, h_neg = _histograms(prep, lay, fold_q, fold_g, targets, lo, limit, hi,
                                          block_bytes, progress)
    brackets = _brackets(prep, kb, h_neg, targets, l2)
    # a float32 key above the limit (in the top bin) may belong to a bracket there
    m_max = float(key_margins(prep).max()) if len(prep.q_rows) else 0.0
    limit2 = min(hi, limit + 2 * m_max + 1e-12 * (abs(limit) + 1)) if limit < hi else limit
    g = _gather(prep, lay, fold_q, fold_g, kb, limit2, brackets, block_bytes, progress)
    return _side_counts(prep, lay, sides, targets, brackets, h_pos, h_neg, g, l2)


def _histograms(prep: Prepared, lay: _Layout, fold_q, fold_g, targets, lo: float, limit: float,
                hi: float, block_bytes: int, progress):
    """Pass 1: each side's histograms of positive and negative keys below
    ``limit`` (again over every key when the pilot's limit missed a rank:
    results never depend on it). Returns the bins, the limit, and (nS, F)
    positive and negative counts."""
    from . import _transfer_kernels as kern

    K, nS = lay.K, len(targets)
    workers = n_workers(prep, block_bytes)
    while True:
        kb = KeyBins.over(lo, limit, _bins_for(K))
        cell_pos = np.zeros((workers, K * K, kb.n), np.int64)
        cell_neg = np.zeros_like(cell_pos)
        side_pos = np.zeros((workers, nS, kb.n), np.int64)
        side_neg = np.zeros_like(side_pos)

        def hist_body(slot, S, s, e):
            kern.cell_histograms(S, kern.rows_of(prep, s, e), kern.Bins(kb.lo, kb.scale, kb.n),
                                 fold_q[s:e], fold_g, K, lay.row_mode[s:e],
                                 lay.tile_sides(fold_q, s, e), limit, cell_pos[slot],
                                 cell_neg[slot], side_pos[slot], side_neg[slot])

        run_tiles(prep, lay.row_mode > 0, block_bytes, "histograms", progress, hist_body)
        cp, cn = cell_pos.sum(axis=0), cell_neg.sum(axis=0)
        h_pos, h_neg = side_pos.sum(axis=0), side_neg.sum(axis=0)
        for s in range(nS):
            cells = np.nonzero((lay.cell_sides[:, :, s] >= 0).ravel())[0]
            h_pos[s] += cp[cells].sum(axis=0)
            h_neg[s] += cn[cells].sum(axis=0)
        del cp, cn, cell_pos, cell_neg
        covered = all(tg.rank is None or tg.rank <= h_neg[s].sum()
                      for s in range(nS) for tg in targets[s])
        if covered or limit >= hi:
            return kb, limit, h_pos, h_neg
        limit = hi


def _brackets(prep: Prepared, kb: KeyBins, h_neg, targets, l2: bool) -> dict:
    """``(side, target) -> select.Bracket``: the bins that hold each target's
    float64 key (a rank's bin, a value's bin or the bin of the target it is
    the same as), widened by ``base.bracket_bins``."""
    pad = bracket_bins(float(key_margins(prep).max()) if len(prep.q_rows) else 0.0, kb.scale)
    out = {}
    for s, tl in enumerate(targets):
        for m, tg in enumerate(tl):
            if tg.rank is not None:
                br = bracket(h_neg[s], int(tg.rank), pad)
                if br is None:
                    raise ConfigError(f"internal: rank {tg.rank} outside the side's negatives")
                out[s, m] = br
            elif tg.value is not None:
                centre = int(kb.of(np.array([dist_to_key(float(tg.value), l2)]))[0])
                out[s, m] = bracket_at(h_neg[s], centre, pad)
    for s, tl in enumerate(targets):
        for m, tg in enumerate(tl):
            if tg.same is not None and tg.same in out:
                out[s, m] = bracket_at(h_neg[s], out[tg.same].bin, pad)
    return out


@dataclass(frozen=True)
class _Gathered:
    """Pass 2: the float64 key of every pair in a target's bracket (sorted by
    target, key and row, so results never depend on which worker gathered
    what), and per own row the pairs below each target's bracket."""

    rows: np.ndarray
    key: np.ndarray
    pos: np.ndarray
    tgt: np.ndarray       # side * TARGETS + target
    own_below: np.ndarray  # (nq, TARGETS, 2): negatives, positives


def _gather(prep: Prepared, lay: _Layout, fold_q, fold_g, kb: KeyBins, limit2: float,
            brackets: dict, block_bytes: int, progress) -> _Gathered:
    from . import _transfer_kernels as kern

    nS, T = lay.cell_sides.shape[2], TARGETS
    tw0 = np.full((nS, T), -1, np.int64)
    tw1 = np.full((nS, T), -1, np.int64)
    flag = np.zeros(kb.n, np.bool_)
    for (s, m), br in brackets.items():
        tw0[s, m], tw1[s, m] = br.lo, br.hi
        flag[br.lo:br.hi + 1] = True
    bins = kern.Bins(kb.lo, kb.scale, kb.n)
    own_below = np.zeros((len(prep.q_rows), T, 2), np.int64)
    parts: list = []
    lock = threading.Lock()
    caps = [64] * n_workers(prep, block_bytes)

    def gather_body(slot, S, s, e):
        rs = lay.tile_sides(fold_q, s, e)

        def call(g_key, g_code, g_n):
            own_below[s:e] = 0  # a rerun counts again
            kern.gather_targets(S, kern.rows_of(prep, s, e), bins, fold_q[s:e], fold_g, rs, limit2,
                                flag, tw0, tw1, lay.own_side[s:e], own_below[s:e], g_key, g_code,
                                g_n)

        caps[slot], (key, code), rows = gather_rows(e - s, caps[slot], (np.float64, np.int32),
                                                    call)
        with lock:
            parts.append((rows + s, key, code))

    run_tiles(prep, lay.row_mode > 0, block_bytes, "thresholds", progress, gather_body)
    rows = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
    key = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0)
    code = np.concatenate([p[2] for p in parts]) if parts else np.zeros(0, np.int32)
    tgt = code // 2
    order = np.lexsort((rows, key, tgt))
    return _Gathered(rows[order], key[order], (code % 2).astype(bool)[order], tgt[order],
                     own_below)


def _side_counts(prep: Prepared, lay: _Layout, sides, targets, brackets: dict, h_pos, h_neg,
                 g: _Gathered, l2: bool) -> list[SideCounts]:
    """Resolve every target's threshold (SPEC 2: from the float64 keys of its
    bracket) and count each side's pairs at it."""
    T, nq, C = TARGETS, len(prep.q_rows), prep.n_classes
    g_dist = np.asarray(key_to_dist(g.key, l2), np.float64)
    resolved: dict = {}

    def resolve(s: int, m: int) -> float:
        if (s, m) not in resolved:
            tg = targets[s][m]
            if tg.same is not None:
                resolved[s, m] = resolve(*tg.same)
            elif tg.value is not None:
                resolved[s, m] = float(tg.value)
            else:
                sel = (g.tgt == s * T + m) & ~g.pos
                resolved[s, m] = float(key_to_dist(brackets[s, m].select(g.key[sel]), l2))
        return resolved[s, m]

    out = []
    for s, side in enumerate(sides):
        P, M = lay.totals[s]
        th, tps, fps, ctp, cfp, rtp, rfp = [], [], [], [], [], [], []
        for m in range(T):
            if m >= len(targets[s]):
                th.append(float("nan"))
                tps.append(0)
                fps.append(0)
                continue
            t = resolve(s, m)
            acc = (g.tgt == s * T + m) & (g_dist <= t)
            b0 = brackets[s, m].lo if (s, m) in brackets else -1
            th.append(t)
            tps.append(int(h_pos[s, :b0].sum()) + int((acc & g.pos).sum()))
            fps.append(int(h_neg[s, :b0].sum()) + int((acc & ~g.pos).sum()))
            if side.own:
                mine = lay.own_side == s
                row_tp = g.own_below[:, m, 1] * mine + np.bincount(g.rows[acc & g.pos],
                                                                   minlength=nq)
                row_fp = g.own_below[:, m, 0] * mine + np.bincount(g.rows[acc & ~g.pos],
                                                                   minlength=nq)
                ctp.append(np.bincount(prep.q_class, weights=row_tp, minlength=C).astype(np.int64))
                cfp.append(np.bincount(prep.q_class, weights=row_fp, minlength=C).astype(np.int64))
                rtp.append(row_tp)
                rfp.append(row_fp)
        own = side.own
        out.append(SideCounts(
            positives=P, negatives=M, evaluated=lay.ev_class[:, s], thresholds=tuple(th),
            tp=tuple(tps), fp=tuple(fps), class_tp=tuple(ctp) if own else None,
            class_fp=tuple(cfp) if own else None, row_tp=tuple(rtp) if own else None,
            row_fp=tuple(rfp) if own else None))
    return out
