"""The counts pass over the upper triangle (every query a gallery item).

The counts pass of a FAR-defined range, and the one pass of an explicit
range, read every inner product once per directed pair: ``ng`` products for
each of ``nq`` query rows. When every query is also a gallery item, with
the same squared norm, and there are no offsets (``tiles.Layout.applies``
and no calibration), the product of queries ``i`` and ``j`` serves both
directed pairs, and their keys and float64 keys are the same numbers. This
pass computes the strips of the upper triangle of the queries, and each
query's products with the gallery items that are not queries, once
(``tiles.each_strip``, as the order-statistic pass: half the BLAS work when
every row is a query, a quarter less when half the rows are), and counts
each pair of queries for both (``_sym_kernels.count_strip``); the results
are those of the full-row pass, bit for bit (the conformance, tile and
symmetric-pass tests run both).

Retrieval needs, per query, the nearest items over all its columns, which
now arrive from every strip above the row and its own: each worker keeps a
heap and a side list for every query (``_sym_kernels.Heaps``), merged after
the pass. Peak memory of that state, with ``w`` workers, ``ng`` gallery
items and heap sizes ``h_j = max(R_j, 8)`` (0 for a query without relevant
items, and for a gallery-only item)::

    w * (sum_j (25 h_j + 16 (2 h_j + 32)) + 136 ng)  bytes

beside each worker's counts per class and group, ``16 w (C + G) K`` bytes,
its strip of products, as in the order-statistic pass, and with a split the
gallery-only rows, ``(ng - nq) D 4`` bytes (at most
``tiles.SPLIT_COPY_BYTES``, else full rows). The route is taken only when
the heaps take at most ``HEAP_BYTES`` (else the full-row pass runs, as for
a query that is not a gallery item), and never with the verification view
(its histograms are per row) or on Dask (whose tasks see a block of rows).
A row whose near misses overflow its side list (many keys within two
margins of its k-th nearest: duplicates) is ranked again on its full row
(:func:`_rank_again`); the results do not change.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import numpy as np

from ..prepare import Prepared
from .base import key_margins
from .tiles import Layout, PassConfig, _add_part, _decide, _PassSetup, _Tile, each_strip
from .partial import Part, Retrieval
from .workers import TileQueue, in_workers, parallel_map, workers_for

#: bytes of the retrieval heaps of every row, over all workers, above which
#: the full-row counts pass runs instead
HEAP_BYTES = 512 * 2**20
#: queries per task of the final ranking (``rank_rows``, on every core)
RANK_ROWS = 2048
#: private: False turns the route off (the tests compare both routes)
_ENABLED = True


def heap_sizes(prep: Prepared, do_ret: bool) -> tuple[np.ndarray, np.ndarray]:
    """(R, heap size) of every query (each is a gallery item): R relevant
    items (its class less itself) and ``min(max(R, 8), ng - 1)`` nearest
    kept (0 where R is 0 or there is no retrieval), as
    ``_kernels.process_block``."""
    R = (prep.class_end[prep.q_class] - prep.class_start[prep.q_class] - 1).astype(np.int64)
    if not do_ret:
        return R, np.zeros(len(R), np.int64)
    ng = len(prep.g_rows)
    return R, np.where(R > 0, np.minimum(np.maximum(R, 8), ng - 1), 0).astype(np.int64)


def heap_bytes(size: np.ndarray, n_workers: int, ng: int) -> int:
    """The retrieval state's bytes (module docstring), ``size`` per query."""
    side = np.where(size > 0, 2 * size + 32, 0)
    return int(n_workers * (25 * size.sum() + 16 * side.sum() + 136 * ng))


def applies(prep: Prepared, cfg: PassConfig) -> bool:
    """Whether a counts pass of ``cfg`` over ``prep`` (all rows in this
    process) takes this route."""
    if not (_ENABLED and Layout.applies(prep) and prep.q_off is None) or cfg.do_vhist:
        return False
    nq = len(prep.q_rows)
    n_workers = workers_for(cfg.tile, cfg.block_rows, -(-nq // cfg.tile))
    return heap_bytes(heap_sizes(prep, cfg.do_ret)[1], n_workers,
                      len(prep.g_rows)) <= HEAP_BYTES


def _rows(prep: Prepared, lay: Layout, row_eval: np.ndarray, row_sample: np.ndarray,
          do_rep: bool):
    """The kernel's :class:`_sym_kernels.SymRows`: per column of ``lay``
    (a gallery-only column is in no group, not evaluated, not sampled)."""
    nq, ng = lay.nq, len(lay.gcol)

    def cols(q: np.ndarray, fill) -> np.ndarray:
        return np.concatenate([q, np.full(ng - nq, fill, q.dtype)])

    grp = prep.q_group if prep.q_group is not None else np.full(nq, -1)
    rs = (row_eval & row_sample) if do_rep else np.zeros(nq, bool)
    return _sym().SymRows(
        prep.metric == "l2", lay.n2, lay.qs, lay.qe, lay.gs, lay.ge, lay.cls,
        cols(grp.astype(np.int64), -1), cols(row_eval.astype(np.int64), 0),
        cols(rs.astype(np.int64), 0), lay.orig, cols(key_margins(prep), 0.0), prep.xq,
        prep.xg, lay.gcol, nq)


def ret_limits(prep: Prepared, R: np.ndarray, size: np.ndarray,
               margin: np.ndarray) -> np.ndarray:
    """Per query, a key above which no item can be among its nearest: with
    ``R >= 8`` the heap holds R items and the R relevant ones are at or
    below the largest of their float64 keys, so an item that can rank has a
    key at most that plus its margin, and the float32 key of the largest is
    within the margin of it: the largest float32 key of its relevant items
    plus twice the margin (as ``_kernels.process_block``'s ``ret_limit``).
    The keys come from one BLAS product of a class's queries and its gallery
    items per block of queries (at most 2**22 products at once); +inf where
    R < 8, -inf without retrieval."""
    lim = np.where(size > 0, np.inf, -np.inf)
    big = np.nonzero((R >= 8) & (size > 0))[0]
    if not len(big):
        return lim
    l2 = prep.metric == "l2"
    qn = np.bincount(prep.q_class, minlength=prep.n_classes)
    qe = np.cumsum(qn)  # a class's queries are [qe - qn, qe)
    for c in np.unique(prep.q_class[big]):
        s, e = int(prep.class_start[c]), int(prep.class_end[c])
        q0, q1 = int(qe[c] - qn[c]), int(qe[c])
        xc = prep.xg[s:e]
        step = max(1, 2**22 // (e - s))
        for b0 in range(q0, q1, step):
            b1 = min(q1, b0 + step)
            prod = prep.xq[b0:b1] @ xc.T
            if l2:
                keys = prep.qn2[b0:b1, None] + prep.gn2[None, s:e] - 2.0 * prod
            else:
                keys = 1.0 - prod.astype(np.float64)
            keys[np.arange(b1 - b0), prep.self_col[b0:b1] - s] = -np.inf  # itself
            lim[b0:b1] = np.where(R[b0:b1] >= 8, keys.max(axis=1) + 2 * margin[b0:b1],
                                  lim[b0:b1])
    return lim


def _heaps(size: np.ndarray, lim: np.ndarray):
    n = len(size)
    off = np.concatenate([[0], np.cumsum(size)[:-1]]).astype(np.int64)
    side = np.where(size > 0, 2 * size + 32, 0)
    soff = np.concatenate([[0], np.cumsum(side)]).astype(np.int64)
    H, S = int(size.sum()), int(soff[-1])
    return _sym().Heaps(off, size, np.empty(H), np.empty(H, np.int64), np.empty(H, bool),
                        np.empty(H, np.int64), np.zeros(n, np.int64), soff, np.empty(S),
                        np.empty(S, np.int64), np.zeros(n, np.int64), np.zeros(n, bool),
                        lim.copy(), lim)


class _Worker:
    """One worker's state: heaps, sums, report histogram slot, and the
    deferred and gathered buffers (grown by the kernel)."""

    def __init__(self, prep: Prepared, setup: _PassSetup, slot: int, size: np.ndarray,
                 lim: np.ndarray, G: int, rows, sampled: np.ndarray):
        C, K = prep.n_classes, len(setup.grid.lo_b)
        self.heaps = _heaps(size, lim)
        # the worker's own copies of the small arrays it reads (not the rows):
        # numba counts references to an array on every call that passes it,
        # atomically, and workers sharing one array would contend for it
        own = {f: getattr(rows, f).copy() for f in rows._fields
               if f not in ("l2", "x", "gx", "nq")}
        self.rows = rows._replace(**own)
        self.sampled = sampled.copy()
        g = setup.grid
        self.grid = g._replace(lo_b=g.lo_b.copy(), hi_b=g.hi_b.copy(), cert_lo=g.cert_lo.copy())
        self.gather = setup.gather._replace(lo=setup.gather.lo.copy(),
                                            hi=setup.gather.hi.copy())
        self.out = _sym().SymOut(np.zeros((C, K), np.int64), np.zeros((C, K), np.int64),
                                 np.zeros((max(G, 1), K), np.int64),
                                 np.zeros((max(G, 1), K), np.int64), np.zeros(2, np.int64))
        rep = setup.report
        self.rep = rep._replace(pos=rep.pos[slot:slot + 1], neg=rep.neg[slot:slot + 1])
        self.dbuf = (np.empty(4096), np.empty(4096, bool), np.empty(4096, np.int32),
                     np.empty(4096, np.int32), 0)
        self.gbuf = (np.empty(1024), 0)

    def take_deferred(self, lay: Layout):
        """The deferred pairs so far, as (key, positive, query i, gallery
        column, query j or -1): each pair once, for both its queries where
        the column is one (``tiles._add_part``); emptied."""
        dv, dp, dq, dg, nd = self.dbuf
        self.dbuf = (dv, dp, dq, dg, 0)
        j = dg[:nd]
        return (dv[:nd].copy(), dp[:nd].copy(), dq[:nd].copy(), lay.gcol[j].astype(np.int32),
                np.where(j < lay.nq, j, -1).astype(np.int32))


def run_sym_counts(prep: Prepared, row_eval: np.ndarray, row_sample: np.ndarray,
                   cfg: PassConfig, progress: Callable[[int], None] | None = None) -> Part:
    """The counts pass of ``cfg`` over the upper triangle: the part that
    ``exact.run_chunk`` gives for all rows (module docstring)."""
    nq, tile = len(prep.q_rows), cfg.tile
    tiles = list(range(0, nq, tile))
    n_workers = workers_for(tile, cfg.block_rows, len(tiles))
    G = len(prep.group_labels) if prep.group_labels is not None else 0
    setup = _PassSetup.of(prep, cfg, n_workers, G)
    lay = Layout.of(prep)
    rows = _rows(prep, lay, row_eval, row_sample, cfg.do_rep)
    R, size = heap_sizes(prep, cfg.do_ret)
    lim = ret_limits(prep, R, size, rows.margin)
    ngo = len(lay.gcol) - nq  # the gallery-only columns keep no heap
    size = np.concatenate([size, np.zeros(ngo, np.int64)])
    lim = np.concatenate([lim, np.full(ngo, -np.inf)])
    sampled = np.nonzero(rows.rs)[0].astype(np.int64)
    workers = [_Worker(prep, setup, w, size, lim, G, rows, sampled) for w in range(n_workers)]
    placed = Part.empty(prep.n_classes, G, cfg.K)
    deferred: list = []
    queue = TileQueue(tiles)

    def work(slot: int) -> None:
        st = workers[slot]

        def strip(S, S2, t, u):
            st.dbuf, st.gbuf = _sym().count_strip(S, S2, t, t, st.rows, st.sampled, st.rep,
                                                  st.gather, st.grid, cfg.do_ret, st.heaps,
                                                  st.out, st.dbuf, st.gbuf)
            got = st.take_deferred(lay) if st.dbuf[4] else None
            if got is not None and cfg.grid is not None:  # the grid is exact: place them now
                cells = _decide(prep, got, cfg.grid, cfg.l2, rows.margin)
            with queue.lock:
                if got is not None and cfg.grid is not None:
                    _add_part(placed, prep, cells, got)
                elif got is not None:
                    deferred.append(got)
                if progress:
                    progress(u - t)

        each_strip(prep, lay, tile, nq, queue, strip)

    in_workers(n_workers, work, queue)
    return _part(prep, cfg, setup, workers, placed, deferred, rows, R, row_eval, row_sample)


def _part(prep, cfg, setup, workers, placed, deferred, rows, R, row_eval, row_sample) -> Part:
    """The pass's part: the workers' sums, and the retrieval of every row."""
    G = placed.group_all.shape[0]
    outs = [w.out for w in workers]
    ret = Retrieval.zeros(len(prep.q_rows))
    if cfg.do_ret:
        redo = np.zeros(len(R), bool)
        cls = prep.q_class
        heaps = tuple(w.heaps for w in workers)
        ps = prep.class_start[cls].astype(np.int64)
        pe = prep.class_end[cls].astype(np.int64)
        g_orig = prep.g_rows.astype(np.int64)
        # row ranges on every core: each row's result is its own (same bytes)
        for _ in parallel_map(lambda j0: _sym().rank_rows(
                heaps, rows, ps, pe, g_orig, R, ret.first_rank, ret.ap, ret.hits, redo, j0,
                min(rows.nq, j0 + RANK_ROWS)), range(0, rows.nq, RANK_ROWS)):
            pass
        ret.n_rel[:] = R
        if redo.any():
            _rank_again(prep, cfg, np.nonzero(redo)[0], row_eval, row_sample, ret)
    gathered = tuple(w.gbuf[0][:w.gbuf[1]].copy() for w in workers if w.gbuf[1])
    rep = setup.report
    return replace(
        placed, class_all=placed.class_all + sum(o.call for o in outs),
        class_pos=placed.class_pos + sum(o.cpos for o in outs),
        group_all=placed.group_all + sum(o.gall[:G] for o in outs),
        group_pos=placed.group_pos + sum(o.gpos[:G] for o in outs),
        deferred=tuple(deferred), gathered=gathered if cfg.do_gather else (),
        gather_below=sum(o.below for o in outs),
        rep_pos=rep.pos.sum(axis=0) if cfg.do_rep else None,
        rep_neg=rep.neg.sum(axis=0) if cfg.do_rep else None, ret=ret, start=0)


def _rank_again(prep: Prepared, cfg: PassConfig, which: np.ndarray, row_eval, row_sample,
                ret: Retrieval) -> None:
    """Retrieval of the rows ``which`` on their full rows (``process_block``
    with retrieval alone), in tiles of ``cfg.tile`` rows."""
    only = replace(cfg, counts=None, grid=None, do_rep=False, do_gather=False, do_win=False,
                   do_vhist=False, do_vgather=False, do_ret=True, sym=False)
    G = len(prep.group_labels) if prep.group_labels is not None else 0
    tile = _Tile(prep, only, _PassSetup.of(prep, only, 1, G), 0)
    margins = key_margins(prep)
    xgT = prep.xg.T
    for s in range(0, len(which), cfg.tile):
        at = which[s:s + cfg.tile]
        n = len(at)
        tile.pad_q[:n] = prep.xq[at]
        tile.pad_q[n:] = 0
        np.matmul(tile.pad_q, xgT, out=tile.S)
        tile.process(prep, row_eval, row_sample, at, margins)
        r = tile.ranking
        ret.put(at, Retrieval(r.first_rank[:n], r.ap[:n], r.n_rel[:n], r.hits[:n]))


def _sym():
    from . import _sym_kernels

    return _sym_kernels
