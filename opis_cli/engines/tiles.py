"""The pieces of one pass that the exact engine's passes share.

``PassConfig`` (what a pass computes), ``_PassSetup`` (the kernels' named
tuples every worker of a pass shares), ``_Tile`` (one worker's buffers and
its call of ``_kernels.process_block``), the strip products of the upper
triangle, and the placing of deferred elements on an exact grid
(``_decide``, ``_add_cells``). Used by the full-row and strip passes
(``exact.py``) and the counts pass over the upper triangle
(``symmetric.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..prepare import Prepared
from .base import FAR_BINS, REPORT_BINS, report_scale
from .verify import VER_BINS, group_bins, key_bracket

class _LazyKernels:
    """``engines._kernels`` (numba), imported on first use: a run on the
    small-input route (:func:`small_route`) never loads numba."""

    def __getattr__(self, name: str):
        from . import _kernels

        return getattr(_kernels, name)


_kernels = _LazyKernels()

@dataclass(frozen=True)
class PassConfig:
    """What one pass over the pairs computes (picklable: sent to workers)."""

    K: int
    l2: bool
    block_rows: int
    #: query rows of every BLAS product (``tile_rows``), fixed by the caller so
    #: that every process (a Dask worker too) cuts the rows into the same tiles
    tile: int
    do_win: bool = False
    win_lo: tuple[float, ...] = (0.0,)
    win_hi: tuple[float, ...] = (1.0,)
    do_rep: bool = False
    r_lo: float = 0.0
    r_hi: float = 1.0
    do_gather: bool = False
    #: the key brackets ``[lo, hi)`` that hold the two order statistics'
    #: float64 keys (``_select``)
    gather: tuple[tuple[float, float], tuple[float, float]] = ((0.0, -1.0), (0.0, -1.0))
    counts: tuple[np.ndarray, np.ndarray] | None = None
    #: the exact grid (distances) when ``counts`` holds it rather than bounds
    #: of a grid still to be known: deferred elements are placed after each
    #: tile, not after the pass
    grid: np.ndarray | None = None
    do_ret: bool = False
    #: the upper triangle only (symmetric inputs): the order statistic
    #: (_kernels.process_strip), or with ``counts`` the counts pass
    #: (engines/symmetric.py); half the matrix products
    sym: bool = False
    #: verification view (engines/verify.py): histogram every key, or gather
    #: the keys of the wanted bins (global ``v_want``, per group ``v_gwant``)
    do_vhist: bool = False
    do_vgather: bool = False
    v_want: np.ndarray | None = None
    v_gwant: np.ndarray | None = None

    def window_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        lo = np.asarray(self.win_lo, np.float64)
        hi = np.asarray(self.win_hi, np.float64)
        return lo, hi, FAR_BINS / (hi - lo)


def _offsets(prep: Prepared) -> tuple[bool, bool, np.ndarray, np.ndarray]:
    """What the kernels need to compute keys: the raw formula (l2 or cosine),
    whether there are offsets (a calibration), and the query and gallery
    offsets (zeros when there are none)."""
    if prep.q_off is None:
        return prep.metric == "l2", False, np.zeros(len(prep.q_rows)), np.zeros(len(prep.g_rows))
    return prep.metric == "l2", True, prep.q_off, prep.g_off


#: private: False keeps query/gallery splits on full rows (the tests compare)
_SPLIT = True
#: bytes of the gallery-only rows' copy above which a split keeps full rows
SPLIT_COPY_BYTES = 512 * 2**20


@dataclass(frozen=True)
class Layout:
    """The columns of the upper-triangle passes: first the ``nq`` query
    rows (column ``j < nq`` is query ``j``'s own gallery item), then the
    gallery items that are not queries, in gallery order (``gcol``: the
    gallery column of each). The product of queries ``i`` and ``j`` serves
    both directed pairs; a gallery-only column serves its row's query only.
    Every row both a query and a gallery item (``Prepared.symmetric``):
    ``gcol`` is the identity and there is no gallery-only column.

    A class's columns are two ranges, ``[qs, qe)`` among the queries and
    ``[gs, ge)`` among the others (``nq`` added). ``xgo`` holds the
    gallery-only rows, contiguous (``(ng - nq) * D * 4`` bytes);
    ``n2``, ``cls``, ``orig`` and ``bg`` (offsets) are per column."""

    nq: int
    gcol: np.ndarray
    xgo: np.ndarray
    n2: np.ndarray
    cls: np.ndarray
    orig: np.ndarray
    bg: np.ndarray
    qs: np.ndarray
    qe: np.ndarray
    gs: np.ndarray
    ge: np.ndarray

    @staticmethod
    def applies(prep: Prepared) -> bool:
        """Every query is a gallery item, with the same squared norm and
        offset either way (so a pair's key and float64 key are the same
        numbers in both directions); a split only while ``_SPLIT`` and
        while its gallery-only rows take at most ``SPLIT_COPY_BYTES``."""
        if prep.symmetric:
            return True
        sc = prep.self_col
        copy = (len(prep.g_rows) - len(sc)) * prep.xg.shape[1] * 4
        if not _SPLIT or copy > SPLIT_COPY_BYTES or (sc < 0).any():
            return False
        if prep.metric == "l2" and not np.array_equal(prep.qn2, prep.gn2[sc]):
            return False
        return prep.q_off is None or bool(np.array_equal(prep.q_off, prep.g_off[sc]))

    @classmethod
    def of(cls, prep: Prepared) -> "Layout":
        nq, ng = len(prep.q_rows), len(prep.g_rows)
        C = prep.n_classes
        if prep.symmetric:
            gcol = np.arange(ng, dtype=np.int64)
            xgo = prep.xg[:0]
        else:
            only = np.ones(ng, bool)
            only[prep.self_col] = False
            gcol = np.concatenate([prep.self_col, np.nonzero(only)[0]]).astype(np.int64)
            xgo = np.ascontiguousarray(prep.xg[only])
        qcount = np.bincount(prep.q_class, minlength=C)
        qe = np.cumsum(qcount)
        gcount = (prep.class_end - prep.class_start) - qcount
        ge = np.cumsum(gcount)
        c = prep.q_class
        bg = prep.g_off[gcol] if prep.q_off is not None else np.zeros(ng)
        return cls(nq, gcol, xgo, prep.gn2[gcol], prep.g_class[gcol].astype(np.int64),
                   prep.g_rows[gcol].astype(np.int64), bg, (qe - qcount)[c].astype(np.int64),
                   qe[c].astype(np.int64), (nq + ge - gcount)[c].astype(np.int64),
                   (nq + ge)[c].astype(np.int64))


def _strip_products(xq, t, u, xqT, xgoT, S, S2, pad_q) -> None:
    """``S = xq[t:u] @ xqT[:, t:]`` and ``S2 = xq[t:u] @ xgoT`` (rows
    zero-padded to the tile): the strip of the upper triangle that starts
    at row ``t``, among the queries and against the gallery-only rows."""
    pad_q[:u - t] = xq[t:u]
    pad_q[u - t:] = 0
    np.matmul(pad_q, xqT[:, t:], out=S)
    if S2.shape[1]:
        np.matmul(pad_q, xgoT, out=S2)


def each_strip(prep: Prepared, layout: Layout, tile: int, stop: int, tiles, fn) -> None:
    """For each first row ``t`` that ``tiles`` hands out, ``fn(S, S2, t, u)``
    with ``S`` and ``S2`` the strip of rows ``[t, u)``, ``u = min(stop, t +
    tile)``, over the columns of ``layout``: ``S[r, j - t]`` the product of
    queries ``t + r`` and ``j`` (``t <= j < nq``), ``S2[r, j - nq]`` that of
    query ``t + r`` and column ``j >= nq``. One worker's buffers, at most
    ``tile * ng * 4`` bytes of products."""
    nq = layout.nq
    ngo = len(layout.gcol) - nq
    pad_q = np.zeros((tile, prep.xq.shape[1]), np.float32)
    buf = np.empty(tile * nq, np.float32)
    S2 = np.empty((tile, ngo), np.float32)
    xqT, xgoT = prep.xq.T, layout.xgo.T
    for t in tiles:
        u = min(stop, t + tile)
        S = buf[:tile * (nq - t)].reshape(tile, nq - t)
        _strip_products(prep.xq, t, u, xqT, xgoT, S, S2, pad_q)
        fn(S[:u - t], S2[:u - t], t, u)


@dataclass(frozen=True)
class _PassSetup:
    """What every worker of a pass shares, as the kernel's named tuples: the
    grid's key bounds and the even grid that guesses a key's cell
    (``_kernels._guess``), the workers' histograms (one slot each: FAR
    windows, report, verification), the gather brackets and the verification
    view's wanted bins. The per-tile buffers in them are placeholders that
    each worker replaces (``_Tile.process``)."""

    grid: _kernels.GridCounts
    windows: _kernels.Windows
    report: _kernels.Report
    gather: _kernels.Gather
    verify: _kernels.Verify
    row_grp: np.ndarray
    offsets: tuple

    @classmethod
    def of(cls, prep: Prepared, cfg: PassConfig, n_workers: int, G: int) -> "_PassSetup":
        K, w = cfg.K, n_workers
        do_counts = cfg.counts is not None
        lo_b, hi_b = cfg.counts if do_counts else (np.full(1, -np.inf), np.full(1, -np.inf))
        base = float(lo_b[0]) if np.isfinite(lo_b[0]) else 0.0
        top = float(hi_b[-1])
        if cfg.l2:
            base = math.sqrt(max(base, 0.0))
            top = math.sqrt(max(top, 0.0)) if np.isfinite(top) else top
        inv_step = (K - 1) / (top - base) if do_counts and np.isfinite(top) and top > base \
            else 0.0
        cert_lo = np.concatenate([[-np.inf], hi_b[:-1]])
        win_lo, win_hi, win_scale = cfg.window_arrays()
        W = len(win_lo)
        win_hist = np.zeros((w, W, FAR_BINS + _kernels.SPILL if cfg.do_win else 1), np.int64)
        RB = REPORT_BINS if cfg.do_rep else 1
        r_scale = report_scale((cfg.r_lo, cfg.r_hi)) if cfg.do_rep else 0.0
        VB, VGB = (VER_BINS, group_bins(G)) if cfg.do_vhist or cfg.do_vgather else (1, 1)
        span = cfg.r_hi - cfg.r_lo
        v_pos = np.zeros((w, VB if cfg.do_vhist else 1), np.int64)
        v_gpos = np.zeros((w, max(G, 1), VGB if cfg.do_vhist and G else 1), np.int64)
        v_want = cfg.v_want if cfg.do_vgather else np.zeros(VB, bool)
        v_gwant = cfg.v_gwant if cfg.do_vgather and G else np.zeros((1, VGB), bool)
        v_range = (np.inf, -np.inf)
        if cfg.do_vgather:
            brackets = [key_bracket(v_want, cfg.r_lo, VB / span)]
            brackets += [key_bracket(g, cfg.r_lo, VGB / span) for g in v_gwant] if G else []
            v_range = (min(b[0] for b in brackets), max(b[1] for b in brackets))
        none = np.zeros(0)
        return cls(
            _kernels.GridCounts(do_counts, lo_b, hi_b, cert_lo, base, inv_step, *[none] * 6),
            _kernels.Windows(cfg.do_win, win_lo, win_hi, win_scale, FAR_BINS,
                             np.zeros((w, W), np.int64), win_hist),
            _kernels.Report(cfg.do_rep, cfg.r_lo, r_scale, RB, np.zeros((w, RB), np.int64),
                            np.zeros((w, RB), np.int64)),
            _kernels.Gather(cfg.do_gather, np.array([g[0] for g in cfg.gather], np.float64),
                            np.array([g[1] for g in cfg.gather], np.float64), none, none, none),
            _kernels.Verify(cfg.do_vhist, cfg.do_vgather, cfg.r_lo, VB / span, VB, VGB / span,
                            VGB, v_pos, np.zeros_like(v_pos), v_gpos, np.zeros_like(v_gpos),
                            none, v_want, v_gwant, *v_range, none, none, none),
            prep.q_group if G else np.full(len(prep.q_rows), -1, np.int64), _offsets(prep))


class _Tile:
    """One worker's buffers for its tiles: the products, the per-row counts
    on the grid, the deferred, gathered and verification elements (which
    grow when a row overflows them) and the retrieval results."""

    def __init__(self, prep: Prepared, cfg: PassConfig, setup: _PassSetup, slot: int):
        tile, K = cfg.tile, cfg.K if cfg.counts is not None else 1
        self.cfg, self.setup, self.slot = cfg, setup, slot
        self.S = np.empty((tile, len(prep.g_rows)), np.float32)
        self.pad_q = np.zeros((tile, prep.xq.shape[1]), np.float32)
        self.cnt_all = np.zeros((tile, K), np.int64)
        self.cnt_pos = np.zeros_like(self.cnt_all)
        self.def_n = np.zeros(tile, np.int64)
        self.gath_n = np.zeros(tile, np.int64)
        self.gath_below = np.zeros((tile, 2), np.int64)
        self.ranking = _kernels.Ranking(cfg.do_ret, np.zeros(tile, np.int64), np.zeros(tile),
                                        np.zeros(tile, np.int64), np.zeros(tile, np.int64))
        self.v_n = np.zeros(tile, np.int64)
        # room for the usual number of deferred keys of a row (those within its
        # margin of a threshold): a row with more makes the tile run again
        self._alloc(512, 4, 64 if cfg.do_vgather else 1)

    def _alloc(self, cap_d: int, cap_g: int, cap_v: int) -> None:
        tile = self.cfg.tile
        self.caps = (cap_d, cap_g, cap_v)
        self.def_val = np.zeros((tile, cap_d), np.float64)
        self.def_pos = np.zeros((tile, cap_d), np.bool_)
        self.def_col = np.zeros((tile, cap_d), np.int64)
        self.gath_val = np.zeros((tile, cap_g), np.float64)
        self.v_val = np.zeros((tile, cap_v), np.float64)
        self.v_isp = np.zeros((tile, cap_v), np.bool_)

    def process(self, prep: Prepared, row_eval, row_sample, at, margins) -> None:
        """``_kernels.process_block`` on the query rows ``at`` (a slice, or
        indices), whose products are in ``S``; again with room for them when
        a row overflowed a buffer (rare; histograms are already counted, so
        not again)."""
        cfg, su = self.cfg, self.setup
        n = at.stop - at.start if isinstance(at, slice) else len(at)
        raw_l2, off, aq, bg = su.offsets
        cls = prep.q_class[at]
        rows = _kernels.Rows(raw_l2, prep.qn2[at], prep.gn2, prep.self_col[at],
                             prep.class_start[cls], prep.class_end[cls], row_eval[at],
                             row_sample[at], prep.g_rows, off, aq[at], bg)
        exact = _kernels.Exact(prep.xq[at], prep.xg, margins[at])
        windows, report, hist = su.windows, su.report, cfg.do_vhist
        while True:
            _kernels.process_block(
                self.S[:n], self.slot, rows, windows, report,
                su.gather._replace(val=self.gath_val, n=self.gath_n, below=self.gath_below),
                su.grid._replace(all=self.cnt_all, pos=self.cnt_pos, def_val=self.def_val,
                                 def_pos=self.def_pos, def_col=self.def_col, def_n=self.def_n),
                self.ranking,
                su.verify._replace(hist=hist, row_grp=su.row_grp[at], val=self.v_val,
                                   isp=self.v_isp, n=self.v_n),
                exact)
            need = (int(self.def_n[:n].max()) if cfg.counts is not None else 0,
                    int(self.gath_n[:n].max()) if cfg.do_gather else 0,
                    int(self.v_n[:n].max()) if cfg.do_vgather else 0)
            if all(nd <= c for nd, c in zip(need, self.caps)):
                return
            self._alloc(*(max(c, 2 * nd) for nd, c in zip(need, self.caps)))
            windows, report = windows._replace(on=False), report._replace(on=False)
            hist = False

    def outputs(self, prep: Prepared, s: int, e: int, margins):
        """The tile's deferred elements (placed on the grid when it is exact),
        gathered keys and verification elements; None where there are none."""
        cfg, n = self.cfg, e - s
        deferred = gathered = v_got = None
        if cfg.counts is not None and self.def_n[:n].any():
            mask = np.arange(self.def_val.shape[1])[None, :] < self.def_n[:n, None]
            rows = np.nonzero(mask)[0]
            deferred = (self.def_val[:n][mask], self.def_pos[:n][mask],
                        (rows + s).astype(np.int32), self.def_col[:n][mask].astype(np.int32))
            if cfg.grid is not None:  # the grid is exact: place them now
                deferred = (_decide(prep, deferred, cfg.grid, cfg.l2, margins), deferred[1],
                            deferred[2])
        if cfg.do_gather and self.gath_n[:n].any():
            mask = np.arange(self.gath_val.shape[1])[None, :] < self.gath_n[:n, None]
            gathered = self.gath_val[:n][mask]
        if cfg.do_vgather and self.v_n[:n].any():
            mask = np.arange(self.v_val.shape[1])[None, :] < self.v_n[:n, None]
            v_got = (self.v_val[:n][mask], self.v_isp[:n][mask], np.nonzero(mask)[0] + s)
        return deferred, gathered, v_got


def _decide(prep: Prepared, deferred, grid: np.ndarray, l2: bool,
            margin: np.ndarray) -> np.ndarray:
    """Grid cells of deferred elements (key, positive, query row, gallery
    column[, both rows]) on the exact ``grid``: ``_kernels.decide_deferred``,
    which recomputes in float64 the keys within their margin of a threshold."""
    vals, q, g = deferred[0], deferred[2], deferred[3]
    off = prep.q_off is not None
    return _kernels.decide_deferred(vals, q, g, margin, np.asarray(grid, np.float64), l2,
                                    prep.xq, prep.xg, prep.metric == "l2", off,
                                    prep.q_off if off else np.zeros(1),
                                    prep.g_off if off else np.zeros(1))


def _add_part(res, prep: Prepared, cells, part) -> None:
    """Count a part of deferred elements (key, positive, query row, gallery
    column[, second query row]) at their grid ``cells``: for its query
    rows, and for the second query row where there is one (>= 0; the
    passes over the upper triangle defer a pair of queries once)."""
    _add_cells(res, prep, cells, part[1], part[2], part[4] if len(part) > 4 else None)


def _add_cells(res, prep: Prepared, cells, pos, q, q2=None) -> None:
    """Count elements at grid ``cells`` (K: above the grid, not counted) for
    their query's class and group, and for the class and group of their
    second query row ``q2`` where it is >= 0 (``_kernels.add_cells``;
    integer sums)."""
    G = res.group_all.shape[0] if prep.q_group is not None else 0
    i64 = np.int64
    _kernels.add_cells(np.asarray(cells, i64), np.asarray(pos, np.bool_), np.asarray(q, i64),
                       np.asarray(q2, i64) if q2 is not None else np.empty(0, i64),
                       q2 is not None, np.asarray(prep.q_class, i64),
                       np.asarray(prep.q_group, i64) if G else np.empty(0, i64), G,
                       res.class_all, res.class_pos, res.group_all, res.group_pos)
