"""Exact engine: per-class pair counts on the threshold grid, streamed over tiles.

Distances are never materialised for all pairs. Queries are processed in
tiles of ``base.tile_rows(ng)`` rows; for each tile one BLAS product gives the
``tile x ng`` inner products, and a compiled kernel (``_kernels.process_block``)
folds them into per-row counts on the threshold grid, histograms and the
retrieval ranks, after which the tile is dropped. One worker per thread
(``_workers``) takes tiles in turn and does both the product (BLAS limited to
one thread) and the kernel, so a core never waits on the other's work and
BLAS's idle threads do not spin beside the kernels.

Peak memory (bytes), with N rows, D dimensions, K thresholds, w workers::

    N*D*4             float32 copy of the embeddings (queries and gallery)
    + w*tile*ng*4     one tile of inner products per worker (at most 256 MiB
                      each unless at the minimum of 64 rows; w is the number
                      of threads, or of whole tiles in block_bytes if fewer,
                      at least one)
    + w*ng*24         three rows of float64 keys per worker
    + w*tile*K*16     per-row counts of a tile
    + w*tile*512*17   per-row room for deferred elements (grown where a row
                      defers more)
    + 2*w*F*8         order-statistic histograms (F = 2**16 bins)
    + nq*24           retrieval results per query
    + n_deferred*17   elements whose grid cell is decided after the counts pass
                      (at most DEFER_BYTES = 1 GiB: above, a third pass)
    + 2*w*(2**11 + G*Bg)*8  with --verification: the histograms of every key
                      (G groups of Bg <= 2048 bins, at most 2**20 bins in all)
    + n_gathered*17   with --verification: the keys of the bins that decide
                      EER, minDCF and FNMR at FMR (engines/verify.py)

The FAR-defined calibration range (SPEC 5) needs the exact order statistic of
all negative distances before the grid is known. It costs one extra pass:

0. a pilot of a couple of thousand sampled query rows estimates, for each of
   the two FAR levels, a narrow window of distances that holds its order
   statistic with high probability;
1. pass 1 counts the negatives below each window and histograms those inside
   it (2**16 bins), so the bins holding the two order statistics are known
   (if a window missed, pass 1 runs again over all distances: results never
   depend on the pilot, only the speed does). When every row is both a query
   and a gallery item the products are symmetric, and pass 1 reads only the
   upper triangle (``_run_strips``): half the BLAS work;
2. pass 2 computes the retrieval metrics and the report histogram, counts
   against the grid known only to within the order statistics' brackets
   (below), gathers the float64 keys of the negatives in the two brackets
   and counts those below them, so the order statistics are selected
   exactly (``_select``); the elements whose grid cell is still undecided
   are deferred and placed once the exact grid is known. Where that would
   defer more than DEFER_BYTES, pass 2 only gathers and a third pass counts
   on the exact grid (``_defer_too_much``).

**Machine-independent decisions.** BLAS rounds float32 products
differently on different CPU kernels (and at different positions of a
product). No result depends on that rounding: every decision is the one the
float64 keys of ``base.exact_keys`` (fixed-order float64 sums of the float32
rows) give. ``base.key_margins`` bounds, per query row, how far a float32
key can be from its float64 key (a proof is in ``base.py``); a key farther
than that from every boundary is decided from its float32 value, any other
is recomputed in float64 (``_kernels.exact_key``). The boundaries: grid
thresholds (explicit grid: at once; uncertain grid: deferred, then
``_resolve_deferred``), the report histogram's bin edges, the order
statistics (pass 1 locates a float32 bin; the float64 key of that rank lies
within the largest margin of it, the *bracket* that pass 2 gathers in
float64), and the retrieval ranking (the heap keeps float32 keys plus the
near misses within two margins of its top; ``_kernels._exact_topk`` ranks
those by float64 key and original row), and the verification view's bin
edges (SPEC 14; its gathered keys are float64 keys, see ``verify.py``).

With an explicit range one pass does everything. The verification view
(SPEC 14, ``GridSpec.verification``) adds histograms of every key to the
counts pass and one gather pass after it (``_verification``, see
``engines/verify.py``). The inner products use the
same BLAS ``sgemm`` that FAISS's own ``pairwise_distances`` calls for the
inner-product metric (``xq @ xb.T``); calling it directly lets the tile be
written into one reused buffer.

Work is split into *chunks* of query rows (``run_chunk``) whose partial
results are summed (``merge``). The algorithm (``run_exact``) takes a *chunk
mapper* that runs one pass over all chunks and returns the merged result:
:func:`map_local` runs them in this process (``ExactEngine``), the Dask
engine (``engines/dask.py``) submits them to a cluster. Integer counts and
per-query results make the outcome independent of the split.

Key space, report histogram and the bin/rank bookkeeping shared with the knn
engine live in ``base.py``; the compiled kernels and their argument
structures in ``_kernels.py``.
"""

from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Callable, Iterable, Optional

import numpy as np
from threadpoolctl import ThreadpoolController

from . import _kernels
from .. import counts, options
from ..errors import ConfigError
from ..prepare import Prepared
from .verify import VER_BINS, group_bins, key_bracket, operating_points, wanted_bins
from .base import (DEFAULT_BLOCK_BYTES, FAR_BINS, REPORT_BINS, REPORT_ROWS, EngineOutput, GridSpec, Progress,
                   check_block_bytes, check_range, dist_to_key, inner_products, key_span,
                   key_to_dist, order_rank, pair_keys, rank_bin, report_edges, report_scale,
                   tile_rows, key_margins)
#: query rows of the pilot that bounds the FAR pass, and values it keeps
PILOT_ROWS = 2048
PILOT_VALUES = 1_000_000


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
    #: order statistic from the upper triangle only (symmetric inputs, see
    #: _kernels.process_strip): half the matrix products
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


def _strip_products(xq, t, u, xgT, S, pad_q) -> None:
    """``S = xq[t:u] @ xgT[:, t:]`` (rows zero-padded to the tile): the strip
    of the upper triangle that starts at row ``t``."""
    pad_q[:u - t] = xq[t:u]
    pad_q[u - t:] = 0
    np.matmul(pad_q, xgT[:, t:], out=S)


def _workers(tile: int, block_rows: int, n_tiles: int) -> int:
    """Tiles processed at once: one per numba thread, as many as the block
    holds (at least one), no more than there are tiles."""
    return max(1, min(_kernels.num_threads(), block_rows // tile, n_tiles))


#: the engine's worker threads and BLAS controller, made once per process
_POOL: ThreadPoolExecutor | None = None
_POOL_SIZE = 0
_BLAS: ThreadpoolController | None = None
_POOL_LOCK = threading.Lock()


def _in_workers(n_workers: int, work: Callable[[int], None], tiles: "_Tiles") -> None:
    """Run ``work(slot)`` for ``slot in range(n_workers)`` concurrently.

    Each worker computes its own tiles' products (BLAS limited to one thread
    meanwhile) and runs the compiled kernel on them, which releases the GIL:
    a core does both its tile's matrix product and its kernel. (With BLAS
    threads beside numba threads, BLAS's idle threads spin after each
    product and took 30-40% from the kernels, measured.) A single worker
    also calls BLAS with one thread: OpenBLAS 0.3.31 rounds some products
    differently with more threads, and a Dask worker (one thread) must give
    the same bytes.
    """
    if n_workers == 1:
        with _one_blas_thread():
            work(0)
        return
    global _POOL, _POOL_SIZE
    with _POOL_LOCK:
        if _POOL is None or _POOL_SIZE < n_workers:
            _POOL_SIZE = max(n_workers, _kernels.num_threads())
            _POOL = ThreadPoolExecutor(_POOL_SIZE, thread_name_prefix="opis-engine")
        pool = _POOL
    with _one_blas_thread():
        futures = [pool.submit(work, slot) for slot in range(n_workers)]
        try:
            for f in futures:
                f.result()
        except BaseException:
            tiles.cancel()  # the other workers finish their tile and stop
            raise


def _one_blas_thread():
    """Context in which BLAS uses one thread (its idle threads would spin)."""
    global _BLAS
    with _POOL_LOCK:
        if _BLAS is None:
            _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=1, user_api="blas")


class _Tiles:
    """The workers' shared queue of tiles (first rows); ``lock`` also guards
    the outputs they merge. ``cancel`` empties it, so that workers stop after
    their current tile when the caller gives up (an error, Ctrl-C)."""

    def __init__(self, starts):
        self._it = iter(starts)
        self.lock = threading.Lock()

    def __iter__(self):
        while True:
            with self.lock:
                item = next(self._it, None)
            if item is None:
                return
            yield item

    def cancel(self) -> None:
        with self.lock:
            self._it = iter(())


def _empty_part(C: int, G: int, K: int, nq: int) -> dict:
    """The partial results of a chunk of ``nq`` queries before any tile:
    ``C`` classes and ``G`` groups on ``K`` thresholds (see ``merge``)."""
    return {
        "class_all": np.zeros((C, K), np.int64), "class_pos": np.zeros((C, K), np.int64),
        "group_all": np.zeros((G, K), np.int64), "group_pos": np.zeros((G, K), np.int64),
        "deferred": [], "gathered": [], "gather_below": np.zeros(2, np.int64),
        "first_rank": np.zeros(nq, np.int64), "ap": np.zeros(nq), "n_rel": np.zeros(nq, np.int64),
        "hits": np.zeros(nq, np.int64), "ver_gathered": [],
    }


def run_chunk(prep: Prepared, row_eval: np.ndarray, row_sample: np.ndarray, cfg: PassConfig,
              start: int, stop: int, progress: Callable[[int], None] | None = None) -> dict:
    """One pass over query rows ``[start, stop)``: the map step.

    Returns partial results that ``merge`` sums: per-class (and per-group)
    count histograms on the grid, histograms, deferred and gathered
    elements, and the retrieval results of these queries. The rows are
    processed in tiles of ``tile_rows(ng)`` by ``_workers`` workers at once.
    """
    if cfg.sym:
        return _run_strips(prep, row_eval, cfg, start, stop, progress)
    K = cfg.K
    ng = len(prep.g_rows)
    tile = cfg.tile
    tiles = list(range(start, stop, tile))
    n_workers = _workers(tile, cfg.block_rows, len(tiles))
    C = prep.n_classes
    G = len(prep.group_labels) if prep.group_labels is not None else 0
    do_counts = cfg.counts is not None
    lo_b, hi_b = cfg.counts if do_counts else (np.full(1, -np.inf), np.full(1, -np.inf))
    # the even grid of distances that guesses a key's cell (_kernels._guess)
    base = float(lo_b[0]) if np.isfinite(lo_b[0]) else 0.0
    top = float(hi_b[-1])
    if cfg.l2:
        base, top = math.sqrt(max(base, 0.0)), math.sqrt(max(top, 0.0)) if np.isfinite(top) else top
    inv_step = (K - 1) / (top - base) if do_counts and np.isfinite(top) and top > base else 0.0
    cert_lo = np.concatenate([[-np.inf], hi_b[:-1]])
    F = FAR_BINS
    win_lo, win_hi, win_scale = cfg.window_arrays()
    W = len(win_lo)
    win_below = np.zeros((n_workers, W), np.int64)
    win_hist = np.zeros((n_workers, W, F + _kernels.SPILL), np.int64) if cfg.do_win \
        else np.zeros((n_workers, W, 1), np.int64)
    gat_lo = np.array([g[0] for g in cfg.gather], np.float64)
    gat_hi = np.array([g[1] for g in cfg.gather], np.float64)
    margins_all = key_margins(prep)
    margins = margins_all[start:stop]
    RB = REPORT_BINS if cfg.do_rep else 1
    rep_pos = np.zeros((n_workers, RB), np.int64)
    rep_neg = np.zeros((n_workers, RB), np.int64)
    r_scale = report_scale((cfg.r_lo, cfg.r_hi)) if cfg.do_rep else 0.0
    xgT = prep.xg.T
    qs = prep.class_start[prep.q_class]
    qe = prep.class_end[prep.q_class]
    raw_l2, off, aq, bg = _offsets(prep)
    out = _empty_part(C, G, K, stop - start)
    queue = _Tiles(tiles)
    lock = queue.lock
    v_on = cfg.do_vhist or cfg.do_vgather
    VB, VGB = (VER_BINS, group_bins(G)) if v_on else (1, 1)
    v_scale = VB / (cfg.r_hi - cfg.r_lo)
    v_gscale = VGB / (cfg.r_hi - cfg.r_lo)
    v_pos = np.zeros((n_workers, VB if cfg.do_vhist else 1), np.int64)
    v_neg = np.zeros_like(v_pos)
    v_gpos = np.zeros((n_workers, max(G, 1), VGB if cfg.do_vhist and G else 1), np.int64)
    v_gneg = np.zeros_like(v_gpos)
    row_grp = prep.q_group if G else np.full(len(prep.q_rows), -1, np.int64)
    v_want = cfg.v_want if cfg.do_vgather else np.zeros(VB, bool)
    v_gwant = cfg.v_gwant if cfg.do_vgather and G else np.zeros((1, VGB), bool)
    if cfg.do_vgather:
        brackets = [key_bracket(v_want, cfg.r_lo, v_scale)]
        brackets += [key_bracket(w, cfg.r_lo, v_gscale) for w in v_gwant] if G else []
        v_glo = min(b[0] for b in brackets)
        v_ghi = max(b[1] for b in brackets)
    else:
        v_glo, v_ghi = np.inf, -np.inf

    def work(slot: int) -> None:
        S = np.empty((tile, ng), np.float32)
        pad_q = np.zeros((tile, prep.xq.shape[1]), np.float32)
        cnt_all = np.zeros((tile, K if do_counts else 1), np.int64)
        cnt_pos = np.zeros_like(cnt_all)
        def_n = np.zeros(tile, np.int64)
        gath_n = np.zeros(tile, np.int64)
        gath_below = np.zeros((tile, 2), np.int64)
        first_rank = np.zeros(tile, np.int64)
        ap = np.zeros(tile, np.float64)
        n_rel = np.zeros(tile, np.int64)
        hits = np.zeros(tile, np.int64)
        # room for the usual number of deferred keys of a row (those within its
        # margin of a threshold): a row with more makes the tile run again
        cap_d, cap_g = 512, 4
        def_val = np.zeros((tile, cap_d), np.float64)
        def_pos = np.zeros((tile, cap_d), np.bool_)
        def_col = np.zeros((tile, cap_d), np.int64)
        gath_val = np.zeros((tile, cap_g), np.float64)
        ranking = _kernels.Ranking(cfg.do_ret, first_rank, ap, n_rel, hits)
        cap_v = 64 if cfg.do_vgather else 1
        v_val = np.zeros((tile, cap_v), np.float64)
        v_isp = np.zeros((tile, cap_v), np.bool_)
        v_n = np.zeros(tile, np.int64)
        for s in queue:
            e = min(stop, s + tile)
            n = e - s
            inner_products(prep.xq, s, e, xgT, S, pad_q)
            rows = _kernels.Rows(raw_l2, prep.qn2[s:e], prep.gn2, prep.self_col[s:e], qs[s:e],
                                 qe[s:e], row_eval[s:e], row_sample[s:e], prep.g_rows, off,
                                 aq[s:e], bg)
            hist_on = True
            while True:
                _kernels.process_block(
                    S[:n], slot, rows,
                    _kernels.Windows(cfg.do_win and hist_on, win_lo, win_hi, win_scale, F,
                                     win_below, win_hist),
                    _kernels.Report(cfg.do_rep and hist_on, cfg.r_lo, r_scale, RB, rep_pos,
                                    rep_neg),
                    _kernels.Gather(cfg.do_gather, gat_lo, gat_hi, gath_val, gath_n,
                                    gath_below),
                    _kernels.GridCounts(do_counts, lo_b, hi_b, cert_lo, base, inv_step, cnt_all,
                                        cnt_pos, def_val, def_pos, def_col, def_n),
                    ranking,
                    _kernels.Verify(cfg.do_vhist and hist_on, cfg.do_vgather, cfg.r_lo, v_scale,
                                    VB, v_gscale, VGB, v_pos, v_neg, v_gpos, v_gneg,
                                    row_grp[s:e], v_want, v_gwant, v_glo, v_ghi, v_val, v_isp,
                                    v_n),
                    _kernels.Exact(prep.xq[s:e], prep.xg, margins[s - start:e - start]))
                need_d = int(def_n[:n].max()) if do_counts else 0
                need_g = int(gath_n[:n].max()) if cfg.do_gather else 0
                need_v = int(v_n[:n].max()) if cfg.do_vgather else 0
                if need_d <= cap_d and need_g <= cap_g and need_v <= cap_v:
                    break
                # rare: a row overflowed its buffer; run the tile again with room
                # for it (histograms are already counted, so not again)
                cap_d, cap_g = max(cap_d, 2 * need_d), max(cap_g, 2 * need_g)
                cap_v = max(cap_v, 2 * need_v)
                def_val = np.zeros((tile, cap_d), np.float64)
                def_pos = np.zeros((tile, cap_d), np.bool_)
                def_col = np.zeros((tile, cap_d), np.int64)
                gath_val = np.zeros((tile, cap_g), np.float64)
                v_val = np.zeros((tile, cap_v), np.float64)
                v_isp = np.zeros((tile, cap_v), np.bool_)
                hist_on = False
            if cfg.do_ret:  # rows of this tile only: no other worker writes them
                out["first_rank"][s - start:e - start] = first_rank[:n]
                out["ap"][s - start:e - start] = ap[:n]
                out["n_rel"][s - start:e - start] = n_rel[:n]
                out["hits"][s - start:e - start] = hits[:n]
            deferred = gathered = None
            if do_counts:
                cls = prep.q_class[s:e]
                grp = prep.q_group[s:e] if G else None
                dn = def_n[:n]
                if dn.any():
                    mask = np.arange(def_val.shape[1])[None, :] < dn[:, None]
                    rows = np.nonzero(mask)[0]
                    deferred = (def_val[:n][mask], def_pos[:n][mask],
                                (rows + s).astype(np.int32), def_col[:n][mask].astype(np.int32))
                    if cfg.grid is not None:  # the grid is exact: place them now
                        deferred = (_decide(prep, deferred, cfg.grid, cfg.l2, margins_all),
                                    deferred[1], deferred[2])
            if cfg.do_gather:
                gn = gath_n[:n]
                if gn.any():
                    mask = np.arange(gath_val.shape[1])[None, :] < gn[:, None]
                    gathered = gath_val[:n][mask]
            v_got = None
            if cfg.do_vgather:
                vn = v_n[:n]
                if vn.any():
                    mask = np.arange(v_val.shape[1])[None, :] < vn[:, None]
                    rows_v = np.nonzero(mask)[0] + s
                    v_got = (v_val[:n][mask], v_isp[:n][mask], rows_v)
            with lock:  # integer sums: the order of tiles does not matter
                if do_counts:
                    _kernels.aggregate_rows(cnt_all[:n], cls, C, out["class_all"])
                    _kernels.aggregate_rows(cnt_pos[:n], cls, C, out["class_pos"])
                    if G:
                        _kernels.aggregate_rows(cnt_all[:n], grp, G, out["group_all"])
                        _kernels.aggregate_rows(cnt_pos[:n], grp, G, out["group_pos"])
                    if deferred is not None and cfg.grid is not None:
                        _add_cells(out, prep, *deferred)
                    elif deferred is not None:
                        out["deferred"].append(deferred)
                if cfg.do_gather:
                    out["gather_below"] += gath_below[:n].sum(axis=0)
                    if gathered is not None:
                        out["gathered"].append(gathered)
                if v_got is not None:
                    out["ver_gathered"].append(v_got)
                if progress:
                    progress(n)

    _in_workers(n_workers, work, queue)
    if cfg.do_win:
        out["win_below"] = win_below.sum(axis=0)
        out["win_hist"] = win_hist.sum(axis=0)[:, :F]  # without the spill bins
    if cfg.do_rep:
        out["rep_pos"] = rep_pos.sum(axis=0)
        out["rep_neg"] = rep_neg.sum(axis=0)
    if cfg.do_vhist:
        out["ver_pos"] = v_pos.sum(axis=0)
        out["ver_neg"] = v_neg.sum(axis=0)
        if G:
            out["ver_gpos"] = v_gpos.sum(axis=0)
            out["ver_gneg"] = v_gneg.sum(axis=0)
    return out


def _run_strips(prep: Prepared, row_eval: np.ndarray, cfg: PassConfig, start: int, stop: int,
                progress: Callable[[int], None] | None = None) -> dict:
    """The order-statistic pass over the upper triangle (``cfg.sym``).

    For every tile of query rows ``[t, t + tile)`` one BLAS product gives the
    strip of columns ``[t, ng)`` (rows ``i`` need ``j > i`` only), at most
    ``tile * ng * 4`` bytes; ``_kernels.process_strip`` counts each pair for
    both its directions. The products of a strip may round differently from
    those of the full-row pass that follows; the order statistics are
    selected from the full-row products, and ``run_exact`` checks their
    ranks there (see ``_select``), so results never depend on this pass.
    """
    ng = len(prep.g_rows)
    tile = cfg.tile
    tiles = list(range(start, stop, tile))
    n_workers = _workers(tile, cfg.block_rows, len(tiles))
    G = len(prep.group_labels) if prep.group_labels is not None else 0
    F = FAR_BINS
    win_lo, win_hi, win_scale = cfg.window_arrays()
    W = len(win_lo)
    win_below = np.zeros((n_workers, W), np.int64)
    win_hist = np.zeros((n_workers, W, F + _kernels.SPILL), np.int64)
    qs = prep.class_start[prep.q_class]
    qe = prep.class_end[prep.q_class]
    # symmetric: gallery column j is query row j
    col_lim = np.where(row_eval, float(win_hi.max()), -np.inf)
    all_eval = bool(row_eval.all())
    windows = _kernels.Windows(True, win_lo, win_hi, win_scale, F, win_below, win_hist)
    raw_l2, off, aq, bg = _offsets(prep)
    xgT = prep.xg.T
    queue = _Tiles(tiles)
    lock = queue.lock

    def work(slot: int) -> None:
        pad_q = np.zeros((tile, prep.xq.shape[1]), np.float32)
        buf = np.empty(tile * ng, np.float32)
        for t in queue:
            u = min(stop, t + tile)
            S = buf[:tile * (ng - t)].reshape(tile, ng - t)
            _strip_products(prep.xq, t, u, xgT, S, pad_q)
            _kernels.process_strip(S[:u - t], slot, t, t, _kernels.StripRows(
                raw_l2, prep.qn2[t:u], prep.gn2, qs[t:u], qe[t:u], row_eval[t:u], col_lim,
                all_eval, off, aq[t:u], bg), windows)
            if progress:
                with lock:
                    progress(u - t)

    _in_workers(n_workers, work, queue)
    out = _empty_part(prep.n_classes, G, cfg.K, stop - start)
    out["win_below"] = win_below.sum(axis=0)
    out["win_hist"] = win_hist.sum(axis=0)[:, :F]  # without the spill bins
    return out


def merge(parts: Iterable[tuple[int, int, dict]], nq: int) -> dict:
    """Sum the partial results of ``run_chunk`` (the reduce step)."""
    total: dict = {}
    for start, stop, p in parts:
        if not total:
            total = {k: v for k, v in p.items() if k not in ("first_rank", "ap", "n_rel", "hits")}
            total["deferred"] = list(p["deferred"])
            total["gathered"] = list(p["gathered"])
            total["ver_gathered"] = list(p.get("ver_gathered", []))
            total["first_rank"] = np.zeros(nq, np.int64)
            total["ap"] = np.zeros(nq)
            total["n_rel"] = np.zeros(nq, np.int64)
            total["hits"] = np.zeros(nq, np.int64)
        else:
            for k in ("class_all", "class_pos", "group_all", "group_pos", "win_below", "win_hist",
                      "rep_pos", "rep_neg", "gather_below", "ver_pos", "ver_neg", "ver_gpos",
                      "ver_gneg"):
                if k in p:
                    total[k] = total[k] + p[k]
            total["deferred"].extend(p["deferred"])
            total["gathered"].extend(p["gathered"])
            total["ver_gathered"].extend(p.get("ver_gathered", []))
        total["first_rank"][start:stop] = p["first_rank"]
        total["ap"][start:stop] = p["ap"]
        total["n_rel"][start:stop] = p["n_rel"]
        total["hits"][start:stop] = p["hits"]
    return total


#: a chunk mapper: one pass over every chunk of query rows, merged; called as
#: ``mapper(prep, row_eval, row_sample, cfg, progress, stage) -> merge(...)``
ChunkMapper = Callable[[Prepared, np.ndarray, np.ndarray, PassConfig, Optional[Progress], str],
                       dict]


def map_local(prep: Prepared, row_eval: np.ndarray, row_sample: np.ndarray, cfg: PassConfig,
              progress: Progress | None, stage: str) -> dict:
    """The local chunk mapper: all query rows as one chunk, in this process
    (``run_chunk`` spreads its tiles over the worker threads)."""
    nq = len(prep.q_rows)
    done = [0]

    def tick(n: int) -> None:
        done[0] += n
        if progress:
            progress(stage, done[0], nq)

    if progress:
        progress(stage, 0, nq)
    part = run_chunk(prep, row_eval, row_sample, cfg, 0, nq, tick)
    return merge([(0, nq, part)], nq)


class ExactEngine:
    """Block-streamed exact counts (SPEC 3) on one machine.

    Parameters
    ----------
    block_bytes : size of one block of inner products, in bytes (results do
        not depend on it).
    """

    name = "exact"

    def __init__(self, block_bytes: int = DEFAULT_BLOCK_BYTES):
        self.block_bytes = check_block_bytes(block_bytes)

    def run(self, prep: Prepared, spec: GridSpec, progress: Progress | None = None) -> EngineOutput:
        return run_exact(prep, spec, map_local, self.block_bytes, progress)


def run_exact(prep: Prepared, spec: GridSpec, map_chunks: ChunkMapper, block_bytes: int,
              progress: Progress | None = None) -> EngineOutput:
    """The exact algorithm (module docstring), each pass run by ``map_chunks``.

    One pass with an explicit calibration range; with a FAR-defined range a
    pilot, the order-statistic pass (again on full rows if the pilot's
    windows missed or the strips' products disagreed) and the counts pass.
    """
    K = int(options.check("num_thresholds", spec.num_thresholds))
    P, M = prep.class_pair_counts()
    evaluated = counts.evaluated(P, M, prep.class_rows, spec.min_class_rows)
    row_eval = evaluated[prep.q_class]
    nq, ng = len(prep.q_rows), len(prep.g_rows)
    row_sample = np.zeros(nq, bool)
    row_sample[:: max(1, -(-nq // REPORT_ROWS))] = True
    l2 = prep.squared_keys  # keys are squared distances (else the distances themselves)
    k_lo, k_hi = key_span(prep)
    block_rows = max(1, block_bytes // (4 * ng))
    base_cfg = dict(K=K, l2=l2, block_rows=block_rows, tile=tile_rows(ng), do_rep=True,
                    r_lo=k_lo, r_hi=k_hi)

    if spec.calibration_range is not None:
        lo, hi = (float(v) for v in spec.calibration_range)
        check_range(lo, hi, "--calibration-range", f"{lo:g}:{hi:g}")
        grid = np.linspace(lo, hi, K)
        cfg = PassConfig(**base_cfg, counts=_exact_key_bounds(grid, l2), grid=grid,
                         do_ret=spec.retrieval,
                         do_vhist=spec.verification is not None)
        res = map_chunks(prep, row_eval, row_sample, cfg, progress, "distances")
        ret = res
        source, passes = "explicit", 1
    else:
        a, b = (float(v) for v in spec.far_range)
        if not (0.0 < a < b <= 1.0):
            raise ConfigError(f"--far-range {a:g}:{b:g} is degenerate: need 0 < A < B <= 1")
        m_total = int(M[evaluated].sum())
        ranks = (order_rank(a, m_total), order_rank(b, m_total))
        everything = (k_lo - 1e-3 * (k_hi - k_lo) - 1e-9, k_hi + 1e-3 * (k_hi - k_lo) + 1e-9)
        windows = _pilot_windows(prep, row_eval, (a, b), l2, everything)
        m_max = float(key_margins(prep).max()) if nq else 0.0
        # pass 1 reads the upper triangle only where the products are symmetric
        sym = prep.symmetric
        passes = 0
        while True:
            while True:
                cfg1 = PassConfig(**{**base_cfg, "do_rep": False}, do_win=True,
                                  win_lo=tuple(w[0] for w in windows),
                                  win_hi=tuple(w[1] for w in windows), sym=sym)
                res1 = map_chunks(prep, row_eval, row_sample, cfg1, progress, "order statistic")
                passes += 1
                located = _locate(ranks, res1["win_below"], res1["win_hist"])
                if located is not None or windows == [everything]:
                    break
                windows = [everything]  # the pilot's windows missed
            if located is None:  # pragma: no cover - the full window always holds them
                raise RuntimeError("order statistic not found; please report this")
            win_lo, win_hi, win_scale = cfg1.window_arrays()
            # the float64 key of rank r lies within the largest margin of the
            # float32 bin that holds rank r (pass 1 counted float32 keys, each
            # within its margin of its float64 key): that is its bracket
            brackets = []
            d_bounds = []
            for w, bb, _ in located:
                width = 1.0 / win_scale[w]
                pad = 1e-9 * (win_hi[w] - win_lo[w]) + 1e-12 + m_max
                klo = win_lo[w] + bb * width - pad
                khi = win_lo[w] + (bb + 1) * width + pad
                brackets.append((float(klo), float(khi)))
                d_bounds.append([key_to_dist(klo, l2) if klo > k_lo else -np.inf,
                                 key_to_dist(khi, l2)])
            bounds = _uncertain_key_bounds(K, d_bounds[0], d_bounds[1], k_lo, k_hi, l2)
            recount = _defer_too_much(ranks, brackets, K, m_max)
            if recount:  # pass 2 only gathers: a dummy one-threshold grid above them
                top = brackets[1][1] + 4 * m_max + 1e-12 * (abs(brackets[1][1]) + 1)
                bounds = (np.array([top]), np.array([top]))
            cfg2 = replace(cfg1, do_win=False, do_rep=True, do_ret=spec.retrieval, do_gather=True,
                           gather=tuple(brackets), counts=bounds, K=len(bounds[0]),
                           sym=False, do_vhist=spec.verification is not None)
            res = map_chunks(prep, row_eval, row_sample, cfg2, progress, "counts")
            passes += 1
            keys = _select(ranks, brackets, res)
            if keys is not None:
                break
            if not sym:  # pragma: no cover - both passes read the same products
                raise RuntimeError("order-statistic passes disagree; please report this")
            # the strips' products rounded differently from the full rows'
            # and moved an order statistic out of its bin: count on full rows
            sym = False
        values = [key_to_dist(k, l2) for k in keys]
        lo, hi = values
        check_range(lo, hi, "--far-range",
                    f"{a:g}:{b:g} (it selects distances {lo:.6g} and {hi:.6g}; "
                    "many negative pairs share one distance)")
        grid = np.linspace(lo, hi, K)
        ret = res
        source = "far"
        if recount:
            res3 = map_chunks(prep, row_eval, row_sample,
                              PassConfig(**{**base_cfg, "do_rep": False},
                                         counts=_exact_key_bounds(grid, l2), grid=grid),
                              progress, "counts")
            passes += 1
            for k in ("class_all", "class_pos", "group_all", "group_pos", "deferred"):
                res[k] = res3[k]
            res.pop("deferred_keys", None)
            if "deferred_keys" in res3:
                res["deferred_keys"] = res3["deferred_keys"]
    _resolve_deferred(res, grid, l2, prep)
    ver = gver = None
    if spec.verification is not None:
        ver, gver = _verification(prep, row_eval, row_sample, res, spec.verification,
                                  PassConfig(**{**base_cfg, "do_rep": False}), map_chunks,
                                  progress)
        passes += 1
    group_tp = group_fp = None
    if prep.q_group is not None:
        group_tp = np.cumsum(res["group_pos"], axis=1)
        group_fp = np.cumsum(res["group_all"] - res["group_pos"], axis=1)
    return EngineOutput(
        thresholds=grid, range_source=source,
        class_tp=np.cumsum(res["class_pos"], axis=1),
        class_fp=np.cumsum(res["class_all"] - res["class_pos"], axis=1),
        group_tp=group_tp, group_fp=group_fp, first_rank=ret["first_rank"],
        ap_at_r=ret["ap"], n_relevant=ret["n_rel"], hits_at_r=ret["hits"],
        hist_edges=report_edges((k_lo, k_hi), l2),
        hist_pos=res["rep_pos"], hist_neg=res["rep_neg"], passes=passes,
        notes={"report_histogram_rows": int((row_sample & row_eval).sum())},
        verification=ver, group_verification=gver)


def _verification(prep: Prepared, row_eval, row_sample, res, dcf, cfg: PassConfig,
                  map_chunks: "ChunkMapper", progress):
    """The verification view's gather pass and its operating points
    (engines/verify.py), from the histograms of the counts pass ``res``."""
    G = len(prep.group_labels) if prep.q_group is not None else 0
    span = cfg.r_hi - cfg.r_lo
    want = wanted_bins(res["ver_pos"], res["ver_neg"], dcf, fmr=True)
    gwant = np.stack([wanted_bins(res["ver_gpos"][g], res["ver_gneg"][g])
                      for g in range(G)]) if G else None
    cfg3 = replace(cfg, do_vgather=True, v_want=want, v_gwant=gwant)
    r3 = map_chunks(prep, row_eval, row_sample, cfg3, progress, "verification")
    got = r3["ver_gathered"]
    vals = np.concatenate([g[0] for g in got]) if got else np.zeros(0)
    isp = np.concatenate([g[1] for g in got]) if got else np.zeros(0, bool)
    rows = np.concatenate([g[2] for g in got]) if got else np.zeros(0, np.int64)
    l2 = cfg.l2
    sel = row_eval[rows]
    ver = operating_points(res["ver_pos"], res["ver_neg"], want, vals[sel], isp[sel], cfg.r_lo,
                           VER_BINS / span, l2)
    gver = None
    if G:
        grp = prep.q_group[rows]
        gver = tuple(operating_points(res["ver_gpos"][g], res["ver_gneg"][g], gwant[g],
                                      vals[grp == g], isp[grp == g], cfg.r_lo,
                                      group_bins(G) / span, l2) for g in range(G))
    return ver, gver


#: bytes of deferred elements the counts pass may hold (see _defer_too_much)
DEFER_BYTES = 2**30
#: bytes per deferred element (key, flag, query row, gallery column)
DEFER_ELEMENT_BYTES = 17


def _defer_too_much(ranks, brackets, K: int, m_max: float) -> bool:
    """Whether the counts pass would defer more than DEFER_BYTES.

    With a FAR-defined range the counts pass knows each threshold only
    within the width of its order statistics' brackets (four margins,
    about), and defers the keys in those zones. About ``(r_hi - r_lo) * K *
    zone / (key_hi - key_lo)`` negatives fall in them. Above the budget
    the counts pass gathers only, and one more pass counts on the exact
    grid (three passes; results are the same either way). The estimate
    varies smoothly with the data, so inputs near the budget are rare.
    """
    width = max(brackets[1][0] - brackets[0][1], 1e-300)
    zone = sum(hi - lo for lo, hi in brackets) / 2 + 2 * m_max
    est = (ranks[1] - ranks[0]) * K * zone / width
    return est * DEFER_ELEMENT_BYTES > DEFER_BYTES


# -- pilot -------------------------------------------------------------------------
def _pilot_windows(prep: Prepared, row_eval: np.ndarray, fars: tuple[float, float],
                   l2: bool, everything: tuple[float, float]) -> list[tuple[float, float]]:
    """Key windows that hold the two order statistics with high probability.

    Estimated on up to PILOT_ROWS evenly spaced evaluated query rows (at
    most an eighth of them, at least 256) and their negative keys with
    evenly spaced gallery columns (at most PILOT_VALUES), each window
    spanning the FAR levels ``F -/+ max(F/2, 6 sigma)`` with ``sigma =
    sqrt(F (1 - F) / rows)``, a bound on the standard error of a FAR
    estimated from that many rows. Pass 1 checks that the order
    statistics fall inside and runs again over everything when they do not,
    so results never depend on the pilot; only the speed does.
    """
    rows = np.nonzero(row_eval)[0]
    ng = len(prep.g_rows)
    n_pick = min(PILOT_ROWS, len(rows), max(256, len(rows) // 8))  # a small share of a pass
    pick = rows[np.unique(np.linspace(0, len(rows) - 1, n_pick)
                          .astype(np.int64))]
    # evenly spaced gallery columns: at most PILOT_VALUES keys in all
    step = max(1, math.ceil(len(pick) * ng / PILOT_VALUES))
    cols = np.arange(0, ng, step)
    xg_cols = prep.xg[cols]
    gn2_cols = prep.gn2[cols]
    vals = []
    with _one_blas_thread():  # small products: idle BLAS threads would spin into pass 1
        for s in range(0, len(pick), 256):
            sub = pick[s:s + 256]
            keys = pair_keys(prep.xq[sub] @ xg_cols.T, prep.qn2[sub], gn2_cols,
                             prep.metric == "l2",
                             None if prep.q_off is None else prep.q_off[sub],
                             None if prep.q_off is None else prep.g_off[cols])
            cls = prep.q_class[sub]
            neg = ~((cols[None, :] >= prep.class_start[cls][:, None])
                    & (cols[None, :] < prep.class_end[cls][:, None]))
            vals.append(keys[neg])
    vals = np.concatenate(vals) if vals else np.zeros(0)
    if len(vals) < 1000:
        return [everything]
    bounds = []
    for f in fars:
        m = max(f / 2, 6 * math.sqrt(f * (1 - f) / len(pick)))
        bounds.append((f - m, f + m))
    inner = [q for pair in bounds for q in pair if 0 < q < 1]
    at = dict(zip(inner, np.quantile(vals, inner))) if inner else {}  # one partition
    windows = []
    for lo_q, hi_q in bounds:
        lo = everything[0] if lo_q <= 0 else float(at[lo_q])
        hi = everything[1] if hi_q >= 1 else float(at[hi_q])
        span = max(hi - lo, 1e-12)
        windows.append((max(everything[0], lo - 1e-6 * span),
                        min(everything[1], np.nextafter(hi + 1e-6 * span, np.inf))))
    if windows[0][1] >= windows[1][0]:  # overlapping: one window
        windows = [(windows[0][0], windows[1][1])]
    return windows


# -- grid bounds in key space -------------------------------------------------------
def _exact_key_bounds(grid: np.ndarray, l2: bool) -> tuple[np.ndarray, np.ndarray]:
    if not l2:
        return grid.copy(), grid.copy()
    # key = d**2: decide by squares except within a few ulps, where the
    # element is deferred and decided by sqrt(key) <= t exactly
    sq = dist_to_key(grid, l2)
    return sq * (1 - 4e-16), sq * (1 + 4e-16) + 1e-300


def _uncertain_key_bounds(K, d_lo, d_hi, k_lo, k_hi, l2):
    """Key-space bounds of every grid threshold when t_lo, t_hi are only
    known to lie in the intervals ``d_lo``, ``d_hi``."""
    lo0 = max(d_lo[0], key_to_dist(k_lo, l2) - 1.0)
    hi1 = min(d_hi[1], key_to_dist(k_hi, l2) + 1.0)
    w = np.arange(K) / (K - 1)
    # t_k = (1 - w) t_lo + w t_hi; where w == 0 the other end does not count
    # (d_hi[0] may be -inf, and 0 * -inf would be NaN)
    with np.errstate(invalid="ignore"):
        g_min = np.where(w > 0, (1 - w) * lo0 + w * d_hi[0], lo0)
    g_max = (1 - w) * d_lo[1] + w * hi1
    span = max(abs(hi1), abs(lo0), 1e-300)
    g_min = g_min - 1e-12 * span
    g_max = g_max + 1e-12 * span
    if l2:
        g_min = np.where(g_min > 0, dist_to_key(g_min, l2), -np.inf)
        g_max = dist_to_key(g_max, l2)
    return g_min, g_max


def _decide(prep: Prepared, deferred, grid: np.ndarray, l2: bool,
            margin: np.ndarray) -> np.ndarray:
    """Grid cells of deferred elements (key, positive, query row, gallery
    column) on the exact ``grid``: ``_kernels.decide_deferred``, which
    recomputes in float64 the keys within their margin of a threshold."""
    vals, _, q, g = deferred
    off = prep.q_off is not None
    return _kernels.decide_deferred(vals, q, g, margin, np.asarray(grid, np.float64), l2,
                                    prep.xq, prep.xg, prep.metric == "l2", off,
                                    prep.q_off if off else np.zeros(1),
                                    prep.g_off if off else np.zeros(1))


def _add_cells(res, prep: Prepared, cells, pos, q) -> None:
    """Count elements at grid ``cells`` (K: above the grid, not counted) for
    their query's class and group (integer sums)."""
    C, K = res["class_all"].shape
    keep = cells < K
    cells, pos, q = cells[keep], pos[keep], q[keep]
    cls = prep.q_class[q]
    res["class_all"] += np.bincount(cls * K + cells, minlength=C * K).reshape(C, K)
    res["class_pos"] += np.bincount(cls[pos] * K + cells[pos], minlength=C * K).reshape(C, K)
    if prep.q_group is not None and res["group_all"].shape[0]:
        G = res["group_all"].shape[0]
        grp = prep.q_group[q]
        ok = (grp >= 0) & (grp < G)  # rows without a group count for none
        grp, cells, pos = grp[ok], cells[ok], pos[ok]
        res["group_all"] += np.bincount(grp * K + cells, minlength=G * K).reshape(G, K)
        res["group_pos"] += np.bincount(grp[pos] * K + cells[pos],
                                        minlength=G * K).reshape(G, K)


def _resolve_deferred(res, grid: np.ndarray, l2: bool, prep: Prepared) -> None:
    """Place the elements deferred by a pass whose grid was not yet exact:
    by their float64 keys where the pass computed them (``deferred_keys``),
    else by ``_decide`` (which recomputes those near a threshold)."""
    parts = res["deferred"]
    keys = res.pop("deferred_keys", None)
    res["deferred"] = []
    if keys is not None and len(keys) == len(parts):
        for part, k64 in zip(parts, keys):
            cells = np.searchsorted(grid, key_to_dist(np.asarray(k64, np.float64), l2),
                                    side="left")
            _add_cells(res, prep, cells, part[1], part[2])
        return
    margin = key_margins(prep) if parts else None
    for part in parts:
        _add_cells(res, prep, _decide(prep, part, grid, l2, margin), part[1], part[2])


# -- the order statistics ---------------------------------------------------------
def _select(ranks, brackets, res) -> list[float] | None:
    """The float64 keys of the two order statistics, from the counts pass.

    ``brackets[g]`` holds the float64 key of rank ``ranks[g]`` (see
    ``run_exact``); pass 2 gathered every negative's float64 key inside it
    and counted those below it (``gather_below``), deciding in float64
    every key within its margin of the bracket. Returns None if a rank is
    not among the gathered keys (which the margins rule out).
    """
    gathered = np.concatenate(res["gathered"]) if res["gathered"] else np.zeros(0)
    keys = []
    for g, (r, (lo, hi)) in enumerate(zip(ranks, brackets)):
        cand = np.sort(gathered[(gathered >= lo) & (gathered < hi)])
        below = int(res["gather_below"][g])
        if not below < r <= below + len(cand):
            return None
        keys.append(float(cand[r - below - 1]))
    return keys


def _locate(ranks, below, hist):
    """For each rank: (window, bin, rank within the bin), or None if a rank is
    not inside a window's histogram."""
    out = []
    for r in ranks:
        hit = None
        for w in range(len(below)):
            found = rank_bin(hist[w], r, below[w])
            if found is not None:
                hit = (w, *found)
                break
        if hit is None:
            return None
        out.append(hit)
    return out
