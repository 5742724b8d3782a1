"""Exact engine: per-class pair counts on the threshold grid, streamed over blocks.

Distances are never materialised for all pairs. Queries are processed in
blocks of ``b`` rows; for each block one BLAS product gives the ``b x ng``
inner products, and a compiled kernel (``_kernels.process_block``) folds them
into per-row counts on the threshold grid, a distance histogram and the
retrieval ranks, after which the block is dropped.

Peak memory (bytes), with N rows, D dimensions, K thresholds, T threads::

    N*D*4 (float32 copy of the embeddings, queries and gallery)
    + b*ng*4 (one block of inner products; b*ng <= block_bytes/4)
    + b*K*16 + b*cap*17 (per-row counts and deferral buffers)
    + 2*T*H*8 (distance histograms; H = 2**20 in the FAR pass, 32 MiB at T=2)
    + N*(8+8+8) (retrieval results per query)
    + n_deferred*17 (elements whose grid cell is decided after the FAR pass)

The FAR-defined calibration range (SPEC 5) needs the exact order statistic of
all negative distances before the grid is known. It costs one extra pass:

1. pass 1 builds an exact histogram of negative keys with 2**20 bins (and the
   retrieval metrics, which need no grid), so the bins holding the two order
   statistics and their ranks inside those bins are known;
2. pass 2 counts against the grid known only to within one bin, gathers the
   negatives of the two bins (so the order statistics are then selected
   exactly) and defers the few elements whose grid cell is still undecided;
   they are placed once the exact grid is known.

With an explicit range one pass does everything. The inner products use the
same BLAS ``sgemm`` that FAISS's own ``pairwise_distances`` calls for the
inner-product metric (``xq @ xb.T``); calling it directly lets the block be
written into one reused buffer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

import numpy as np

from . import _kernels
from .errors import ConfigError
from .prepare import Prepared

Progress = Callable[[str, int, int], None]

#: default bytes of one block of inner products
DEFAULT_BLOCK_BYTES = 64 * 2**20
#: histogram bins of the order-statistic pass
FAR_BINS = 2**20
#: bins of the distance histogram kept in the result (FAR_BINS is a multiple)
REPORT_BINS = 512


@dataclass(frozen=True)
class GridSpec:
    """How the calibration range is chosen (SPEC 5)."""

    num_thresholds: int = 101
    far_range: tuple[float, float] = (0.01, 0.1)
    calibration_range: tuple[float, float] | None = None


@dataclass(frozen=True)
class EngineOutput:
    """What the engine measured; everything downstream is computed from this.

    ``class_tp[c, k]`` / ``class_pp[c, k]`` are the numbers of positive / all
    pairs of class ``c`` with distance ``<= thresholds[k]`` (so
    ``FP = class_pp - class_tp``); likewise for groups.
    """

    thresholds: np.ndarray
    range_source: str
    class_tp: np.ndarray
    class_pp: np.ndarray
    group_tp: np.ndarray | None
    group_pp: np.ndarray | None
    first_rank: np.ndarray
    ap_at_r: np.ndarray
    n_relevant: np.ndarray
    hist_edges: np.ndarray
    hist_pos: np.ndarray
    hist_neg: np.ndarray
    passes: int
    deferred: int


def _rank(fraction: float, m: int) -> int:
    """``ceil(F * M)`` computed exactly on the decimal value of F (at least 1)."""
    return max(1, math.ceil(Fraction(repr(float(fraction))) * m))


class _Buffers:
    """Per-block output buffers, grown when a block needs more room."""

    def __init__(self, b: int, K: int, T: int, H: int):
        self.cnt_all = np.zeros((b, K), np.int64)
        self.cnt_pos = np.zeros((b, K), np.int64)
        self.def_n = np.zeros(b, np.int64)
        self.gath_n = np.zeros(b, np.int64)
        self.first_rank = np.zeros(b, np.int64)
        self.ap = np.zeros(b, np.float64)
        self.n_rel = np.zeros(b, np.int64)
        self.hist_pos = np.zeros((T, H), np.int64)
        self.hist_neg = np.zeros((T, H), np.int64)
        self.set_caps(b, 32, 4)

    def set_caps(self, b: int, cap_d: int, cap_g: int) -> None:
        self.def_val = np.zeros((b, cap_d), np.float64)
        self.def_pos = np.zeros((b, cap_d), np.bool_)
        self.gath_val = np.zeros((b, cap_g), np.float64)


class ExactEngine:
    """Block-streamed exact counts (SPEC 3) on one machine.

    Parameters
    ----------
    block_bytes : size of one block of inner products, in bytes.
    """

    name = "exact"

    def __init__(self, block_bytes: int = DEFAULT_BLOCK_BYTES):
        if block_bytes < 1:
            raise ConfigError("block size must be positive")
        self.block_bytes = int(block_bytes)

    # -- public -----------------------------------------------------------
    def run(self, prep: Prepared, spec: GridSpec, progress: Progress | None = None) -> EngineOutput:
        K = int(spec.num_thresholds)
        if K < 2:
            raise ConfigError(f"--num-thresholds must be at least 2, got {K}")
        P, M = prep.class_pair_counts()
        evaluated = (P > 0) & (M > 0)
        row_eval = evaluated[prep.q_class]
        l2 = prep.metric == "l2"
        h_lo, h_hi = self._key_span(prep)
        self._prep, self._l2, self._row_eval = prep, l2, row_eval
        self._h_lo, self._h_hi = h_lo, h_hi
        nq = len(prep.q_rows)
        self._first_rank = np.zeros(nq, np.int64)
        self._ap = np.zeros(nq, np.float64)
        self._n_rel = np.zeros(nq, np.int64)

        if spec.calibration_range is not None:
            lo, hi = (float(v) for v in spec.calibration_range)
            _check_range(lo, hi, "--calibration-range", f"{lo:g}:{hi:g}")
            grid = np.linspace(lo, hi, K)
            lo_b, hi_b = self._exact_key_bounds(grid)
            res = self._pass(K, REPORT_BINS, do_hist=True, do_ret=True, counts=(lo_b, hi_b),
                             progress=progress, stage="distances")
            self._resolve_deferred(res, grid)
            hist_pos, hist_neg = res["hist_pos"], res["hist_neg"]
            source, passes = "explicit", 1
        else:
            a, b = (float(v) for v in spec.far_range)
            if not (0.0 < a < b <= 1.0):
                raise ConfigError(
                    f"--far-range {a:g}:{b:g} is degenerate: need 0 < A < B <= 1")
            m_total = int(M[evaluated].sum())
            if m_total == 0:
                raise ConfigError("--far-range needs negative pairs, and there are none")
            res1 = self._pass(K, FAR_BINS, do_hist=True, do_ret=True, counts=None,
                              progress=progress, stage="order statistic")
            hneg = res1["hist_neg"]
            cum = np.cumsum(hneg)
            ranks = (_rank(a, m_total), _rank(b, m_total))
            bins = [int(np.searchsorted(cum, r, side="left")) for r in ranks]
            width = (h_hi - h_lo) / FAR_BINS
            pad = 1e-9 * (h_hi - h_lo) + 1e-12
            kb = []
            for bb in bins:
                klo = h_lo + bb * width - pad if bb > 0 else -np.inf
                khi = h_lo + (bb + 1) * width + pad if bb < FAR_BINS - 1 else np.inf
                kb.append((klo, khi))
            d_lo = [self._key_to_dist(k) for k in kb[0]]
            d_hi = [self._key_to_dist(k) for k in kb[1]]
            lo_b, hi_b = self._uncertain_key_bounds(K, d_lo, d_hi, h_lo, h_hi)
            res2 = self._pass(K, FAR_BINS, do_hist=False, do_ret=False, counts=(lo_b, hi_b),
                              gather=tuple(bins), progress=progress, stage="counts")
            gathered = res2["gathered"]
            values = []
            for bb, r in zip(bins, ranks):
                before = int(cum[bb - 1]) if bb > 0 else 0
                cand = np.sort(gathered[bb])
                if len(cand) != int(hneg[bb]):  # pragma: no cover - engine invariant
                    raise RuntimeError("order-statistic pass disagreed with the histogram")
                values.append(self._key_to_dist(float(cand[r - before - 1])))
            lo, hi = values
            _check_range(lo, hi, "--far-range",
                         f"{a:g}:{b:g} (the FAR bounds select distances {lo:.6g} and {hi:.6g})")
            grid = np.linspace(lo, hi, K)
            res = res2
            self._resolve_deferred(res, grid)
            # report histogram: FAR_BINS -> REPORT_BINS by exact summation
            f = FAR_BINS // REPORT_BINS
            hist_pos = res1["hist_pos"].reshape(REPORT_BINS, f).sum(axis=1)
            hist_neg = hneg.reshape(REPORT_BINS, f).sum(axis=1)
            source, passes = "far", 2

        edges_key = np.linspace(h_lo, h_hi, REPORT_BINS + 1)
        edges = np.array([self._key_to_dist(k) for k in edges_key])
        class_tp = np.cumsum(res["class_pos"], axis=1)
        class_pp = np.cumsum(res["class_all"], axis=1)
        group_tp = group_pp = None
        if prep.q_group is not None:
            group_tp = np.cumsum(res["group_pos"], axis=1)
            group_pp = np.cumsum(res["group_all"], axis=1)
        return EngineOutput(
            thresholds=grid, range_source=source, class_tp=class_tp, class_pp=class_pp,
            group_tp=group_tp, group_pp=group_pp, first_rank=self._first_rank,
            ap_at_r=self._ap, n_relevant=self._n_rel, hist_edges=edges,
            hist_pos=hist_pos, hist_neg=hist_neg, passes=passes,
            deferred=res["deferred_total"])

    # -- key space ----------------------------------------------------------
    def _key_span(self, prep: Prepared) -> tuple[float, float]:
        if prep.metric == "cosine":
            return 0.0, 2.0
        top = math.sqrt(float(prep.qn2.max())) + math.sqrt(float(prep.gn2.max()))
        return 0.0, max(top * top, 1e-30)

    def _key_to_dist(self, key: float) -> float:
        if not self._l2:
            return float(key)
        if key == np.inf:
            return np.inf
        return math.sqrt(max(float(key), 0.0))

    def _exact_key_bounds(self, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not self._l2:
            return grid.copy(), grid.copy()
        # key = d**2: decide by squares except within a few ulps, where the
        # element is deferred and decided by sqrt(key) <= t exactly
        sq = grid * grid
        return sq * (1 - 4e-16), sq * (1 + 4e-16) + 1e-300

    def _uncertain_key_bounds(self, K, d_lo, d_hi, h_lo, h_hi):
        """Key-space bounds of every grid threshold when t_lo, t_hi are only
        known to lie in ``d_lo``, ``d_hi`` (intervals)."""
        lo0 = max(d_lo[0], self._key_to_dist(h_lo) - 1.0)
        hi1 = min(d_hi[1], self._key_to_dist(h_hi) + 1.0)
        w = np.arange(K) / (K - 1)
        g_min = (1 - w) * lo0 + w * d_hi[0]
        g_max = (1 - w) * d_lo[1] + w * hi1
        span = max(abs(hi1), abs(lo0), 1e-300)
        g_min = g_min - 1e-12 * span
        g_max = g_max + 1e-12 * span
        if self._l2:
            g_min = np.where(g_min > 0, g_min * g_min, -np.inf)
            g_max = g_max * g_max
        return g_min, g_max

    # -- one pass over the blocks --------------------------------------------
    def _pass(self, K, H, *, do_hist, do_ret, counts, progress, stage, gather=(-1, -1)):
        prep = self._prep
        nq, ng = len(prep.q_rows), len(prep.g_rows)
        b = max(1, min(nq, self.block_bytes // (4 * ng)))
        T = _kernels.num_threads()
        buf = _Buffers(b, K, T, H if do_hist else 1)
        cap_d, cap_g = 32, 4
        S = np.empty((b, ng), np.float32)
        xgT = prep.xg.T
        C = prep.n_classes
        G = len(prep.group_labels) if prep.group_labels is not None else 0
        class_all = np.zeros((C, K), np.int64)
        class_pos = np.zeros((C, K), np.int64)
        group_all = np.zeros((max(G, 1), K), np.int64)
        group_pos = np.zeros((max(G, 1), K), np.int64)
        do_counts = counts is not None
        lo_b, hi_b = counts if do_counts else (np.zeros(1), np.zeros(1))
        base = float(lo_b[0]) if do_counts and np.isfinite(lo_b[0]) else 0.0
        top = float(hi_b[-1]) if do_counts else 1.0
        inv_step = (K - 1) / (top - base) if do_counts and np.isfinite(top) and top > base else 0.0
        do_gather = gather[0] >= 0
        gathered = {bb: [] for bb in gather} if do_gather else {}
        deferred = []
        deferred_total = 0
        h_scale = H / (self._h_hi - self._h_lo)
        qs = prep.class_start[prep.q_class]
        qe = prep.class_end[prep.q_class]
        dummy_i = np.zeros(1, np.int64)
        if progress:
            progress(stage, 0, nq)
        for s in range(0, nq, b):
            e = min(nq, s + b)
            n = e - s
            Sb = S[:n]
            np.matmul(prep.xq[s:e], xgT, out=Sb)
            hist_on = do_hist
            while True:
                _kernels.process_block(
                    Sb, self._l2, prep.qn2[s:e], prep.gn2, prep.self_col[s:e], qs[s:e], qe[s:e],
                    self._row_eval[s:e], prep.g_rows,
                    hist_on, self._h_lo, h_scale, H, buf.hist_pos, buf.hist_neg,
                    do_gather, gather[0], gather[1], buf.gath_val, buf.gath_n,
                    do_counts, lo_b, hi_b, base, inv_step, buf.cnt_all, buf.cnt_pos,
                    buf.def_val, buf.def_pos, buf.def_n,
                    do_ret, buf.first_rank, buf.ap, buf.n_rel)
                need_d = int(buf.def_n[:n].max()) if do_counts else 0
                need_g = int(buf.gath_n[:n].max()) if do_gather else 0
                if need_d <= cap_d and need_g <= cap_g:
                    break
                # rare: a row overflowed its buffer; run the block again with room
                # for it (histograms are already counted, so not again)
                cap_d, cap_g = max(cap_d, 2 * need_d), max(cap_g, 2 * need_g)
                buf.set_caps(b, cap_d, cap_g)
                hist_on = False
            if do_ret:
                self._first_rank[s:e] = buf.first_rank[:n]
                self._ap[s:e] = buf.ap[:n]
                self._n_rel[s:e] = buf.n_rel[:n]
            if do_counts:
                cls = prep.q_class[s:e]
                _kernels.aggregate_rows(buf.cnt_all[:n], cls, C, class_all)
                _kernels.aggregate_rows(buf.cnt_pos[:n], cls, C, class_pos)
                grp = prep.q_group[s:e] if G else dummy_i
                if G:
                    _kernels.aggregate_rows(buf.cnt_all[:n], grp, G, group_all)
                    _kernels.aggregate_rows(buf.cnt_pos[:n], grp, G, group_pos)
                dn = buf.def_n[:n]
                if dn.any():
                    mask = np.arange(buf.def_val.shape[1])[None, :] < dn[:, None]
                    rows = np.nonzero(mask)[0]
                    deferred.append((buf.def_val[:n][mask].copy(), buf.def_pos[:n][mask].copy(),
                                     cls[rows].copy(), grp[rows].copy() if G else None))
                    deferred_total += int(dn.sum())
            if do_gather:
                gn = buf.gath_n[:n]
                if gn.any():
                    mask = np.arange(buf.gath_val.shape[1])[None, :] < gn[:, None]
                    vals = buf.gath_val[:n][mask]
                    hb = np.clip(((vals - self._h_lo) * h_scale).astype(np.int64), 0, H - 1)
                    for bb in gathered:
                        gathered[bb].append(vals[hb == bb])
            if progress:
                progress(stage, e, nq)
        out = {
            "class_all": class_all, "class_pos": class_pos,
            "group_all": group_all[:G], "group_pos": group_pos[:G],
            "deferred": deferred, "deferred_total": deferred_total,
            "gathered": {bb: np.concatenate(v) if v else np.zeros(0) for bb, v in gathered.items()},
        }
        if do_hist:
            out["hist_pos"] = buf.hist_pos.sum(axis=0)
            out["hist_neg"] = buf.hist_neg.sum(axis=0)
        return out

    def _resolve_deferred(self, res, grid: np.ndarray) -> None:
        """Place the deferred elements in their grid cell, now that it is exact."""
        K = len(grid)
        for vals, pos, cls, grp in res["deferred"]:
            d = np.sqrt(np.maximum(vals, 0.0)) if self._l2 else vals
            cell = np.searchsorted(grid, d, side="left")
            keep = cell < K
            cell, pos, cls = cell[keep], pos[keep], cls[keep]
            np.add.at(res["class_all"], (cls, cell), 1)
            np.add.at(res["class_pos"], (cls[pos], cell[pos]), 1)
            if grp is not None:
                grp = grp[keep]
                np.add.at(res["group_all"], (grp, cell), 1)
                np.add.at(res["group_pos"], (grp[pos], cell[pos]), 1)
        res["deferred"] = []


def _check_range(lo: float, hi: float, option: str, what: str) -> None:
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ConfigError(f"{option} {what}: bounds must be finite numbers")
    if not lo < hi:
        raise ConfigError(
            f"{option} {what} is degenerate: the lower threshold must be below the upper "
            f"(got {lo:.6g} and {hi:.6g}); widen the range")
