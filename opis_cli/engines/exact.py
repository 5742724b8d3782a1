"""Exact engine: per-class pair counts on the threshold grid, streamed over tiles.

Distances are never materialised for all pairs. Queries are processed in
tiles of ``base.tile_rows(ng)`` rows; for each tile one BLAS product gives the
``tile x ng`` inner products, and a compiled kernel (``_kernels.process_block``)
folds them into per-row counts on the threshold grid, histograms and the
retrieval ranks, after which the tile is dropped. One worker per thread
(``workers_for``) takes tiles in turn and does both the product (BLAS limited to
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
    + w*sum_j (25 h_j + 16 (2 h_j + 32) + 136)  the counts pass over the upper
                      triangle's retrieval heaps (h_j = max(R_j, 8) per query,
                      0 per gallery-only row; at most 512 MiB, else full rows:
                      engines/symmetric.py)
    + (ng-nq)*D*4     a query/gallery split read by its upper triangle: the
                      gallery-only rows, contiguous (``tiles.Layout``; at
                      most 512 MiB, else full rows)
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
   upper triangle (``_run_strips``): half the BLAS work. With a split whose
   queries are all gallery items (run in one process), it reads the upper
   triangle of the queries and the gallery-only columns once
   (``tiles.Layout``): with half the rows queries, a quarter less;
2. pass 2 computes the retrieval metrics and the report histogram, counts
   against the grid known only to within the order statistics' brackets
   (below), gathers the float64 keys of the negatives in the two brackets
   and counts those below them, so the order statistics are selected
   exactly (``_select``); the elements whose grid cell is still undecided
   are deferred and placed once the exact grid is known. Where that would
   defer more than DEFER_BYTES, pass 2 only gathers and a third pass counts
   on the exact grid (``_defer_too_much``). When every query is a gallery
   item (without offsets or the verification view), pass 2 reads the upper
   triangle too and counts each pair of queries for both
   (``engines/symmetric.py``), as does the one pass of an explicit range.

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

**Small inputs** (:func:`small_route`, by size alone) skip all of the above:
``ExactEngine.run`` hands them to the reference engine's plain float64 numpy
(``reference.py``, the same bytes), so that they never import or compile
numba; ``_kernels`` is imported on first use.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from typing import Callable, Optional

import numpy as np

from .. import options
from ..errors import ConfigError
from ..prepare import Prepared
from .verify import VER_BINS, group_bins, operating_points, wanted_bins
from .base import (DEFAULT_BLOCK_BYTES, FAR_BINS, EngineOutput, GridSpec, Progress, RunRows,
                   check_block_bytes, check_range, dist_to_key, inner_products, key_span,
                   key_to_dist, order_rank, rank_bin, report_edges, tile_rows, key_margins)
from .partial import Part, Retrieval, merge
from .select import padded_span, pilot_columns, pilot_negative_keys, pilot_rows, select_or_none
from . import symmetric
from .tiles import (Layout, PassConfig, _add_cells, _add_part, _decide, _kernels, _offsets,
                    _PassSetup, _Tile, each_strip)
from .workers import TileQueue, in_workers, parallel_map, workers_for


#: query rows of the pilot that bounds the FAR pass, and values it keeps
PILOT_ROWS = 2048
PILOT_VALUES = 1_000_000


def run_chunk(prep: Prepared, row_eval: np.ndarray, row_sample: np.ndarray, cfg: PassConfig,
              start: int, stop: int, progress: Callable[[int], None] | None = None) -> Part:
    """One pass over query rows ``[start, stop)``: the map step.

    Returns the partial results (``partial.Part``) that ``partial.merge``
    sums: per-class (and per-group) count histograms on the grid, histograms,
    deferred and gathered elements, and the retrieval results of these
    queries. The rows are processed in tiles of ``tile_rows(ng)`` by
    ``workers_for`` workers at once; each worker computes its tile's products
    and runs ``_kernels.process_block`` on them (``_Tile``), then adds the
    tile's results to the chunk's (``_Chunk.add``).
    """
    if cfg.sym and cfg.counts is not None:  # all rows, in this process (RunPlan.sym_counts)
        assert (start, stop) == (0, len(prep.q_rows))
        return symmetric.run_sym_counts(prep, row_eval, row_sample, cfg, progress)
    if cfg.sym:
        return _run_strips(prep, row_eval, cfg, start, stop, progress)
    tiles = list(range(start, stop, cfg.tile))
    n_workers = workers_for(cfg.tile, cfg.block_rows, len(tiles))
    G = len(prep.group_labels) if prep.group_labels is not None else 0
    setup = _PassSetup.of(prep, cfg, n_workers, G)
    chunk = _Chunk(prep, cfg, start, Part.empty(prep.n_classes, G, cfg.K, stop - start), G)
    queue = TileQueue(tiles)
    xgT = prep.xg.T
    margins = key_margins(prep)

    def work(slot: int) -> None:
        tile = _Tile(prep, cfg, setup, slot)
        for s in queue:
            e = min(stop, s + cfg.tile)
            inner_products(prep.xq, s, e, xgT, tile.S, tile.pad_q)
            tile.process(prep, row_eval, row_sample, slice(s, e), margins)
            got = tile.outputs(prep, s, e, margins)
            with queue.lock:  # integer sums: the order of tiles does not matter
                chunk.add(tile, s, e, got)
                if progress:
                    progress(e - s)

    in_workers(n_workers, work, queue)
    return chunk.part(setup)


class _Chunk:
    """The results of a chunk's tiles so far (added under the queue's lock)."""

    def __init__(self, prep: Prepared, cfg: PassConfig, start: int, out: Part, G: int):
        self.prep, self.cfg, self.start, self.out, self.G = prep, cfg, start, out, G
        self.deferred: list = []
        self.gathered: list = []
        self.ver: list = []
        self.gather_below = np.zeros(2, np.int64)

    def add(self, tile: _Tile, s: int, e: int, got) -> None:
        cfg, out, prep, G, n = self.cfg, self.out, self.prep, self.G, e - s
        deferred, gathered, v_got = got
        if cfg.do_ret:  # rows of this tile only: no other worker writes them
            r = tile.ranking
            out.ret.put(slice(s - self.start, e - self.start),
                        Retrieval(r.first_rank[:n], r.ap[:n], r.n_rel[:n], r.hits[:n]))
        if cfg.counts is not None:
            cls = prep.q_class[s:e]
            _kernels.aggregate_rows(tile.cnt_all[:n], cls, prep.n_classes, out.class_all)
            _kernels.aggregate_rows(tile.cnt_pos[:n], cls, prep.n_classes, out.class_pos)
            if G:
                _kernels.aggregate_rows(tile.cnt_all[:n], prep.q_group[s:e], G, out.group_all)
                _kernels.aggregate_rows(tile.cnt_pos[:n], prep.q_group[s:e], G, out.group_pos)
            if deferred is not None and cfg.grid is not None:
                _add_cells(out, prep, *deferred)
            elif deferred is not None:
                self.deferred.append(deferred)
        if cfg.do_gather:
            self.gather_below += tile.gath_below[:n].sum(axis=0)
            if gathered is not None:
                self.gathered.append(gathered)
        if v_got is not None:
            self.ver.append(v_got)

    def part(self, setup: _PassSetup) -> Part:
        """The chunk's part: its counts and lists, and the workers' histograms summed."""
        cfg = self.cfg
        win_below, win_hist = setup.windows.below, setup.windows.hist
        rep_pos, rep_neg = setup.report.pos, setup.report.neg
        v = setup.verify
        v_pos, v_neg, v_gpos, v_gneg = v.pos, v.neg, v.gpos, v.gneg
        vg = cfg.do_vhist and self.G
        return replace(
            self.out, start=self.start, deferred=tuple(self.deferred),
            gathered=tuple(self.gathered), gather_below=self.gather_below,
            ver_gathered=tuple(self.ver),
            win_below=win_below.sum(axis=0) if cfg.do_win else None,
            win_hist=win_hist.sum(axis=0)[:, :FAR_BINS] if cfg.do_win else None,  # no spill
            rep_pos=rep_pos.sum(axis=0) if cfg.do_rep else None,
            rep_neg=rep_neg.sum(axis=0) if cfg.do_rep else None,
            ver_pos=v_pos.sum(axis=0) if cfg.do_vhist else None,
            ver_neg=v_neg.sum(axis=0) if cfg.do_vhist else None,
            ver_gpos=v_gpos.sum(axis=0) if vg else None,
            ver_gneg=v_gneg.sum(axis=0) if vg else None)


def _run_strips(prep: Prepared, row_eval: np.ndarray, cfg: PassConfig, start: int, stop: int,
                progress: Callable[[int], None] | None = None) -> Part:
    """The order-statistic pass over the upper triangle (``cfg.sym``).

    For every tile of query rows ``[t, t + tile)`` BLAS gives the strip of
    query columns ``[t, nq)`` (rows ``i`` need ``j > i`` only) and the
    gallery-only columns (``tiles.Layout``; none when every row is a query),
    at most ``tile * ng * 4`` bytes; ``_kernels.process_strip`` counts each
    pair of queries for both its directions. The products of a strip may round differently from
    those of the full-row pass that follows; the order statistics are
    selected from the full-row products, and ``run_exact`` checks their
    ranks there (see ``_select``), so results never depend on this pass.
    """
    tile = cfg.tile
    tiles = list(range(start, stop, tile))
    n_workers = workers_for(tile, cfg.block_rows, len(tiles))
    G = len(prep.group_labels) if prep.group_labels is not None else 0
    setup = _PassSetup.of(prep, cfg, n_workers, G)
    windows = setup.windows
    lay = Layout.of(prep)
    col_lim = np.where(row_eval, float(windows.hi.max()), -np.inf)
    all_eval = bool(row_eval.all())
    raw_l2, off, aq, _ = _offsets(prep)
    queue = TileQueue(tiles)

    def work(slot: int) -> None:
        def strip(S, S2, t, u):
            _kernels.process_strip(S, S2, slot, t, t, _kernels.StripRows(
                raw_l2, prep.qn2[t:u], lay.n2, lay.qs[t:u], lay.qe[t:u], lay.gs[t:u],
                lay.ge[t:u], row_eval[t:u], col_lim, all_eval, off, aq[t:u], lay.bg), windows)
            if progress:
                with queue.lock:
                    progress(u - t)

        each_strip(prep, lay, tile, stop, queue, strip)

    in_workers(n_workers, work, queue)
    return _Chunk(prep, cfg, start, Part.empty(prep.n_classes, G, cfg.K, stop - start),
                  G).part(setup)


#: a chunk mapper: one pass over every chunk of query rows, merged; called as
#: ``mapper(prep, row_eval, row_sample, cfg, progress, stage) -> partial.merge(...)``
ChunkMapper = Callable[[Prepared, np.ndarray, np.ndarray, PassConfig, Optional[Progress], str],
                       Part]


def map_local(prep: Prepared, row_eval: np.ndarray, row_sample: np.ndarray, cfg: PassConfig,
              progress: Progress | None, stage: str) -> Part:
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
    return merge([part], nq, prep.n_classes)


#: the small-input route: an input with at most SMALL_TERMS products or
#: squared differences (``nq * ng * D``) and SMALL_PAIRS pairs (``nq * ng``)
#: is computed by the reference engine's float64 numpy (0.5-2 s at the
#: bound on one core, docs/performance.md) instead of the compiled kernels
#: (whose first compile takes half a minute). The private variable
#: ``_OPIS_SMALL_TERMS`` (read once) sets the bound on terms; 0 turns the
#: route off (the test suite does, so that its small cases exercise the
#: kernels)
SMALL_TERMS = int(os.environ.get("_OPIS_SMALL_TERMS", 2**27))
SMALL_PAIRS = 2**22
#: the working arrays of one block of the route, in bytes
SMALL_BLOCK_BYTES = 64 * 2**20
#: ``provenance.index`` of a run on the small-input route
SMALL_INDEX = "exact (small input: all pairs, float64 numpy)"


def small_route(prep: Prepared, spec: GridSpec) -> bool:
    """Whether :class:`ExactEngine` computes this input on the small-input route.

    By the input's size only (never the cache, threads or block size): at
    most ``SMALL_PAIRS`` pairs and ``SMALL_TERMS`` terms, and no verification
    view (SPEC 14, which the reference engine does not measure). Same bytes
    either way (the conformance suite holds the kernels to the reference's).
    Peak memory of the route (bytes): ``16 * nq * ng`` (every pair's distance
    and histogram key, held; at most 64 MiB) ``+ SMALL_BLOCK_BYTES`` (one
    block's working arrays) ``+ 8 * (nq + ng) * D`` (the rows in float64).
    """
    nq, ng = len(prep.q_rows), len(prep.g_rows)
    return (spec.verification is None and nq * ng <= SMALL_PAIRS
            and nq * ng * max(prep.dim, 1) <= SMALL_TERMS)


class ExactEngine:
    """Block-streamed exact counts (SPEC 3) on one machine.

    A small input (:func:`small_route`) is computed by the reference
    engine's plain float64 numpy, without importing numba; its result says
    so in ``provenance.index`` (SMALL_INDEX), its numbers are the same bytes.

    Parameters
    ----------
    block_bytes : size of one block of inner products, in bytes (results do
        not depend on it).
    """

    name = "exact"

    def __init__(self, block_bytes: int = DEFAULT_BLOCK_BYTES):
        self.block_bytes = check_block_bytes(block_bytes)

    def run(self, prep: Prepared, spec: GridSpec, progress: Progress | None = None) -> EngineOutput:
        if small_route(prep, spec):
            from .reference import ReferenceEngine

            # no progress: it takes about a second, and the CLI's first
            # progress stage asks whether the kernels are compiled (numba)
            out = ReferenceEngine(min(self.block_bytes, SMALL_BLOCK_BYTES),
                                  hold_pairs=SMALL_PAIRS).run(prep, spec)
            return replace(out, notes={**out.notes, "index": SMALL_INDEX})
        return run_exact(prep, spec, map_local, self.block_bytes, progress, whole=True)


@dataclass(frozen=True)
class RunPlan:
    """What a run fixes once, before any pass: the grid size ``K``, the
    evaluated classes (SPEC 3) and query rows, the report histogram's rows,
    the key space, and the configuration every pass starts from; ``run``
    makes one pass with the run's chunk mapper."""

    prep: Prepared
    K: int
    m_total: int                    # negative pairs of the evaluated classes
    row_eval: np.ndarray
    row_sample: np.ndarray
    span: tuple[float, float]       # base.key_span
    base: PassConfig                # the report histogram's, no other work
    map_chunks: "ChunkMapper"
    progress: Progress | None
    #: the counts pass reads the upper triangle (engines/symmetric.py)
    sym_counts: bool = False
    #: the order-statistic pass reads the upper triangle (``tiles.Layout``:
    #: a query/gallery split only when every pass runs in this process)
    strips: bool = False

    @classmethod
    def of(cls, prep: Prepared, spec: GridSpec, map_chunks: "ChunkMapper", block_bytes: int,
           progress: Progress | None, whole: bool = False) -> "RunPlan":
        K = int(options.check("num_thresholds", spec.num_thresholds))
        rr = RunRows.of(prep, spec.min_class_rows)
        ng = len(prep.g_rows)
        span = key_span(prep)
        base = PassConfig(K=K, l2=prep.squared_keys, block_rows=max(1, block_bytes // (4 * ng)),
                          tile=tile_rows(ng), do_rep=True, r_lo=span[0], r_hi=span[1])
        sym = whole and symmetric.applies(prep, replace(base, do_ret=spec.retrieval,
                                                   do_vhist=spec.verification is not None))
        strips = prep.symmetric or (whole and Layout.applies(prep))
        return cls(prep, K, int(rr.M[rr.evaluated].sum()), rr.row_eval, rr.row_sample, span,
                   base, map_chunks, progress, sym, strips)

    @property
    def l2(self) -> bool:
        """Keys are squared distances (else the distances themselves)."""
        return self.base.l2

    def run(self, cfg: PassConfig, stage: str) -> Part:
        return self.map_chunks(self.prep, self.row_eval, self.row_sample, cfg, self.progress,
                               stage)


def run_exact(prep: Prepared, spec: GridSpec, map_chunks: ChunkMapper, block_bytes: int,
              progress: Progress | None = None, whole: bool = False) -> EngineOutput:
    """The exact algorithm (module docstring), each pass run by ``map_chunks``.

    One pass with an explicit calibration range; with a FAR-defined range a
    pilot, the order-statistic pass (again on full rows if the pilot's
    windows missed or the strips' products disagreed) and the counts pass.
    ``whole``: ``map_chunks`` runs every pass over all rows in this process,
    so a counts pass may read the upper triangle (``engines/symmetric.py``).
    """
    plan = RunPlan.of(prep, spec, map_chunks, block_bytes, progress, whole)
    l2, verify = plan.l2, spec.verification is not None
    if spec.calibration_range is not None:
        lo, hi = (float(v) for v in spec.calibration_range)
        check_range(lo, hi, "--calibration-range", f"{lo:g}:{hi:g}")
        grid = np.linspace(lo, hi, plan.K)
        res = ret = plan.run(replace(plan.base, counts=_exact_key_bounds(grid, l2), grid=grid,
                                     do_ret=spec.retrieval, do_vhist=verify,
                                     sym=plan.sym_counts), "distances")
        source, passes = "explicit", 1
    else:
        grid, res, ret, passes = _far_defined(plan, spec)
        source = "far"
    _resolve_deferred(res, grid, l2, prep)
    ver = gver = None
    if verify:
        ver, gver = _verification(plan, res, spec.verification)
        passes += 1
    group_tp = group_fp = None
    if prep.q_group is not None:
        group_tp = np.cumsum(res.group_pos, axis=1)
        group_fp = np.cumsum(res.group_all - res.group_pos, axis=1)
    return EngineOutput(
        thresholds=grid, range_source=source,
        class_tp=np.cumsum(res.class_pos, axis=1),
        class_fp=np.cumsum(res.class_all - res.class_pos, axis=1),
        group_tp=group_tp, group_fp=group_fp, first_rank=ret.ret.first_rank,
        ap_at_r=ret.ret.ap, n_relevant=ret.ret.n_rel, hits_at_r=ret.ret.hits,
        hist_edges=report_edges(plan.span, l2),
        hist_pos=res.rep_pos, hist_neg=res.rep_neg, passes=passes,
        notes={"report_histogram_rows": int((plan.row_sample & plan.row_eval).sum())},
        verification=ver, group_verification=gver)


def _far_defined(plan: RunPlan, spec: GridSpec) -> tuple[np.ndarray, Part, Part, int]:
    """The grid of a FAR-defined range (SPEC 5) and the counts on it: the
    order-statistic passes, then the counts pass (counting on the grid while
    it gathers the order statistics, or again once they are known when that
    would defer too much). Returns the grid, the counts, the part holding the
    retrieval results, and the passes made."""
    a, b = (float(v) for v in spec.far_range)
    if not (0.0 < a < b <= 1.0):
        raise ConfigError(f"--far-range {a:g}:{b:g} is degenerate: need 0 < A < B <= 1")
    ranks = (order_rank(a, plan.m_total), order_rank(b, plan.m_total))
    keys, res, recount, passes = _order_statistics(plan, spec, (a, b), ranks)
    lo, hi = (key_to_dist(k, plan.l2) for k in keys)
    check_range(lo, hi, "--far-range",
                f"{a:g}:{b:g} (it selects distances {lo:.6g} and {hi:.6g}; "
                "many negative pairs share one distance)")
    grid = np.linspace(lo, hi, plan.K)
    if not recount:
        return grid, res, res, passes
    res3 = plan.run(replace(plan.base, do_rep=False, counts=_exact_key_bounds(grid, plan.l2),
                            grid=grid, sym=plan.sym_counts), "counts")
    counted = replace(res, class_all=res3.class_all, class_pos=res3.class_pos,
                      group_all=res3.group_all, group_pos=res3.group_pos,
                      deferred=res3.deferred, deferred_keys=res3.deferred_keys)
    return grid, counted, res, passes + 1


def _order_statistics(plan: RunPlan, spec: GridSpec, fars: tuple[float, float],
                      ranks) -> tuple[list, Part, bool, int]:
    """The float64 keys of the two order statistics (``ranks``), from pass 1
    (histograms in the pilot's windows; the upper triangle only where the
    products are symmetric) and pass 2 (which gathers their brackets and
    counts on the grid as far as it is known). Returns the keys, pass 2's
    part, whether the counts must be made again, and the passes made."""
    prep, l2 = plan.prep, plan.l2
    everything = padded_span(plan.span)
    windows = _pilot_windows(prep, plan.row_eval, fars, l2, everything)
    m_max = float(key_margins(prep).max()) if len(prep.q_rows) else 0.0
    sym = plan.strips
    passes = 0
    while True:
        while True:
            cfg1 = replace(plan.base, do_rep=False, do_win=True, sym=sym,
                           win_lo=tuple(w[0] for w in windows),
                           win_hi=tuple(w[1] for w in windows))
            res1 = plan.run(cfg1, "order statistic")
            passes += 1
            located = _locate(ranks, res1.win_below, res1.win_hist)
            if located is not None or windows == [everything]:
                break
            windows = [everything]  # the pilot's windows missed
        if located is None:  # pragma: no cover - the full window always holds them
            raise RuntimeError("order statistic not found; please report this")
        brackets, bounds = _brackets(cfg1, located, m_max, plan.span, l2)
        recount = _defer_too_much(ranks, brackets, plan.K, m_max)
        if recount:  # pass 2 only gathers: a dummy one-threshold grid above them
            top = brackets[1][1] + 4 * m_max + 1e-12 * (abs(brackets[1][1]) + 1)
            bounds = (np.array([top]), np.array([top]))
        cfg2 = replace(cfg1, do_win=False, do_rep=True, do_ret=spec.retrieval, do_gather=True,
                       gather=tuple(brackets), counts=bounds, K=len(bounds[0]),
                       sym=sym and plan.sym_counts, do_vhist=spec.verification is not None)
        res = plan.run(cfg2, "counts")
        passes += 1
        keys = _select(ranks, brackets, res)
        if keys is not None:
            return keys, res, recount, passes
        if not sym:  # pragma: no cover - both passes read the same products
            raise RuntimeError("order-statistic passes disagree; please report this")
        # the strips' products rounded differently from the full rows'
        # and moved an order statistic out of its bin: count on full rows
        sym = False


def _brackets(cfg1: PassConfig, located, m_max: float, span, l2: bool):
    """The key brackets of the located ranks, and the key bounds of every
    grid threshold they imply. The float64 key of rank r lies within the
    largest margin of the float32 bin that holds rank r (pass 1 counted
    float32 keys, each within its margin of its float64 key)."""
    win_lo, win_hi, win_scale = cfg1.window_arrays()
    brackets, d_bounds = [], []
    for w, bb, _ in located:
        width = 1.0 / win_scale[w]
        pad = 1e-9 * (win_hi[w] - win_lo[w]) + 1e-12 + m_max
        klo = win_lo[w] + bb * width - pad
        khi = win_lo[w] + (bb + 1) * width + pad
        brackets.append((float(klo), float(khi)))
        d_bounds.append([key_to_dist(klo, l2) if klo > span[0] else -np.inf,
                         key_to_dist(khi, l2)])
    return brackets, _uncertain_key_bounds(cfg1.K, d_bounds[0], d_bounds[1], *span, l2)


def _verification(plan: RunPlan, res: Part, dcf):
    """The verification view's gather pass and its operating points
    (engines/verify.py), from the histograms of the counts pass ``res``."""
    prep, row_eval = plan.prep, plan.row_eval
    cfg = replace(plan.base, do_rep=False)
    G = len(prep.group_labels) if prep.q_group is not None else 0
    span = cfg.r_hi - cfg.r_lo
    want = wanted_bins(res.ver_pos, res.ver_neg, dcf, fmr=True)
    gwant = np.stack([wanted_bins(res.ver_gpos[g], res.ver_gneg[g])
                      for g in range(G)]) if G else None
    cfg3 = replace(cfg, do_vgather=True, v_want=want, v_gwant=gwant)
    r3 = plan.run(cfg3, "verification")
    got = r3.ver_gathered
    vals = np.concatenate([g[0] for g in got]) if got else np.zeros(0)
    isp = np.concatenate([g[1] for g in got]) if got else np.zeros(0, bool)
    rows = np.concatenate([g[2] for g in got]) if got else np.zeros(0, np.int64)
    l2 = cfg.l2
    sel = row_eval[rows]
    ver = operating_points(res.ver_pos, res.ver_neg, want, vals[sel], isp[sel], cfg.r_lo,
                           VER_BINS / span, l2)
    gver = None
    if G:
        grp = prep.q_group[rows]
        gver = tuple(operating_points(res.ver_gpos[g], res.ver_gneg[g], gwant[g],
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
def pilot_sample(row_eval: np.ndarray, ng: int) -> tuple[np.ndarray, np.ndarray]:
    """The pilot's query rows (up to PILOT_ROWS evenly spaced evaluated rows,
    at most an eighth of them, at least 256: a small share of a pass) and
    gallery columns (evenly spaced, at most PILOT_VALUES pairs)."""
    rows = np.nonzero(row_eval)[0]
    pick = pilot_rows(rows, min(PILOT_ROWS, max(256, len(rows) // 8)))
    return pick, pilot_columns(len(pick), ng, PILOT_VALUES)


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
    pick, cols = pilot_sample(row_eval, len(prep.g_rows))
    vals = pilot_negative_keys(prep, pick, cols)
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


def _resolve_deferred(res: Part, grid: np.ndarray, l2: bool, prep: Prepared) -> None:
    """Add to ``res``'s counts the elements deferred by a pass whose grid was
    not yet exact: by their float64 keys where the pass computed them
    (``deferred_keys``), else by ``_decide`` (which recomputes those near a
    threshold)."""
    parts, keys = res.deferred, res.deferred_keys
    if keys is not None and len(keys) == len(parts):
        for part, k64 in zip(parts, keys):
            cells = np.searchsorted(grid, key_to_dist(np.asarray(k64, np.float64), l2),
                                    side="left")
            _add_part(res, prep, cells, part)
        return
    if not parts:
        return
    margin = key_margins(prep)
    # each part decided on a core of its own (the kernel releases the GIL),
    # counted here in order: integer sums, the same whatever the threads
    # (the generator first: it runs to its end, and closes its pool, inside the loop)
    cells = parallel_map(lambda part: _decide(prep, part, grid, l2, margin), parts)
    for c, part in zip(cells, parts):
        _add_part(res, prep, c, part)


# -- the order statistics ---------------------------------------------------------
def _select(ranks, brackets, res) -> list[float] | None:
    """The float64 keys of the two order statistics, from the counts pass.

    ``brackets[g]`` holds the float64 key of rank ``ranks[g]`` (see
    ``run_exact``); pass 2 gathered every negative's float64 key inside it
    and counted those below it (``gather_below``), deciding in float64
    every key within its margin of the bracket. Returns None if a rank is
    not among the gathered keys (which the margins rule out).
    """
    gathered = np.concatenate(res.gathered) if res.gathered else np.zeros(0)
    keys = [select_or_none(gathered[(gathered >= lo) & (gathered < hi)], r,
                           int(res.gather_below[g]))
            for g, (r, (lo, hi)) in enumerate(zip(ranks, brackets))]
    return None if None in keys else keys


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
