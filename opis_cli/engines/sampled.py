"""Sampled engine: every positive pair, a uniform sample of the negatives (SPEC 15).

OPIS, FAR and FRR per class are rates, and rates can be estimated from
samples with a known error. This engine looks at

* **every positive pair** (one small matrix product per class, as the knn
  engine), so ``TP_c(t)`` and ``P_c`` are exact. A class whose pairs exceed
  a budget (``max(S * n_c, 2**24)`` pairs) has its query rows sampled instead,
  and its TP counts scaled (the notes name such classes);
* **a uniform sample of the negatives of each query**: the queries are dealt
  at random into blocks of ``B`` rows; each block draws ``S``
  (``--negatives-per-query``) gallery rows uniformly without replacement,
  and each query of the block pairs with those of other classes. Every
  (query, gallery) pair is thus drawn with probability ``S / ng``, so
  ``FP_c(t) = (ng / S) * (sampled negatives of class c with d <= t)`` is an
  **unbiased** (Horvitz-Thompson) estimate; the counts are floats;
* the **FAR-defined range** from the sampled negatives: ``t(F)`` is the
  smallest sampled distance whose estimated rank ``(ng / S) * count``
  reaches ``ceil(F * M)`` (with ``S >= ng`` every pair is drawn and this is
  the exact order statistic of SPEC 5);
* **retrieval** (R@k, MAP@R) exactly for a seeded sample of
  ``--retrieval-queries`` queries against the whole gallery (BLAS products,
  ties by gallery row); the other queries carry ``n_relevant = 0``.

Intervals (SPEC 15) come from a **delete-a-group jackknife**: each block's
``S`` draws are split into ``GROUPS`` random groups (draw ``i`` goes to group
``i mod GROUPS``). Replicate ``g`` is the estimate without group ``g``'s
draws (weights ``ng / (S - S_g)``), recomputed from its own FAR range on:
the counting pass places every pair on the main grid and on each
replicate's grid (only the pairs near a grid point, within the largest
shift of a replicate's grid, need the replicate grids). The engine also
keeps each group's counts on the main grid, for the bias of OPIS.
``opis_cli.metrics.estimate`` turns the replicates into intervals and
corrects that bias (noise in each class's curve inflates the variance
across classes).

Blocks have up to 1024 rows and there are at least ``MIN_BLOCKS`` of them
where the rows allow: a block's draws serve all of its queries, so the
number of independent draws (``n_blocks * S``) is what the global FAR, hence
the range, rests on. The blocks run on one worker thread per core, each
calling BLAS with one thread (OpenBLAS rounds some products differently
with more threads): the bytes do not depend on the machine.

Cost: a pilot over a twentieth of the blocks (where the order statistics
lie), then two passes over the ``nq * S`` drawn pairs (the keys inside
brackets around the order statistics; the counts), ``sum_c n_c^2``
positive pairs and ``Q * ng`` products for retrieval, all BLAS ``sgemm``.
Memory besides the prepared arrays (``N x D x 4`` bytes of rows, ``N x ~56``
of indices and norms; see ``opis_cli.prepare``):

* kept to the end (they are the output): three arrays of ``GROUPS * C * K``
  counts (2 bytes each while a class has fewer than 65,536 drawn pairs or
  positive pairs, else 4 or 8) and four of ``C * K`` 8-byte counts;
* while the FAR range is found: the keys inside the brackets, about 1.5% of
  the ``nq * S`` drawn pairs at 9 bytes each (twice while they are joined);
  the pilot's 2**21 keys;
* while counting: index buffers of up to 2**23 (negatives) or 2**21
  (positives, 32 bytes a pair) entries, twice while they are merged, and a
  few ``C * K`` int64 temporaries;
* per worker: a block of ``B x S`` float32 products (4 MiB) with its
  selected pairs; in the retrieval, one float32 product tile
  (``T x ng``, at most ``RETRIEVAL_KEYS`` values: 32 MiB) and a few rows of
  ``ng`` float64 keys (never the tile's keys at once).

After each pass the freed memory is handed back to the system (``_trim``:
the worker threads' malloc arenas would keep it). Measured at 1M x 384
(``benchmarks/bench_sampled_scale.py``), the peak is reached while the result
and its estimate block are built (``opis_cli.api``, ``metrics.estimate``:
about twenty float64 arrays of ``C * K``), on top of the counts above.
Same input, options and seed: the same bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from .. import counts, options
from ..errors import ConfigError
from ..prepare import Prepared
from .base import (
    DEFAULT_BLOCK_BYTES,
    FAR_BINS,
    REPORT_BINS,
    EngineOutput,
    GridSpec,
    Progress,
    RunContext,
    check_block_bytes,
    check_range,
    bracket_bins,
    dist_to_key,
    drop_self,
    exact_keys,
    explicit_range,
    far_fractions,
    key_margins,
    nearest_exact,
    key_to_dist,
    pair_keys,
    quiet,
    report_edges,
    report_scale,
    tile_rows,
    value_bins,
)
from .partial import Retrieval
from .ranking import list_length, retrieval_at_r
from .select import bracket
from .workers import one_blas_thread as _one_blas_thread, parallel_map as _parallel

#: random groups of the draws (the jackknife's replicates)
GROUPS = 10
#: keys of one block of sampled pairs (rows x draws), float64
BLOCK_KEYS = 2**20
#: blocks of queries (with their own draws) at least, where the rows allow
MIN_BLOCKS = 256
#: positive pairs a class may always have computed in full
POSITIVE_BUDGET = 2**24
#: float64 keys of the retrieval products held at once
RETRIEVAL_KEYS = 2**23


@dataclass(frozen=True)
class Replicates:
    """The delete-a-group jackknife replicates of a sampled run.

    Replicate ``g`` leaves out the draws of group ``g``. ``thresholds`` (G, K):
    each replicate's own grid (from its own FAR range); ``fp`` (G, C, K): the
    sampled negatives of the other groups with distance ``<=`` each of the
    replicate's thresholds, scaled by ``weights[g] = ng / (S - S_g)``; ``tp``
    (G, C, K): the positives on the replicate's grid (of every query row, or
    for a class whose positives were sampled, of the sampled rows outside
    group ``g``, scaled by ``tp_scale[class][g]``); ``fpc`` the finite
    population correction ``1 - S / ng`` of the jackknife variance.
    """

    thresholds: np.ndarray
    fp: np.ndarray
    weights: np.ndarray
    tp: np.ndarray
    tp_scale: dict
    fpc: float
    #: the main grid and its counts: every draw (C, K) and each group's (G, C, K)
    main_thresholds: np.ndarray
    main_tp: np.ndarray
    main_fp: np.ndarray
    fp_groups: np.ndarray
    method: str
    parameters: dict
    seed: int
    #: queries with at least one positive (the retrieval sample's population)
    retrieval_population: int

    @property
    def n(self) -> int:
        return len(self.weights)

    def curves(self, g: int, P: np.ndarray, M: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                     np.ndarray]:
        """``(thresholds, tp, fp)`` of replicate ``g``: (K,), (C, K), (C, K) float64."""
        fp = self.weights[g] * self.fp[g].astype(np.float64)
        tp = self.tp[g].astype(np.float64)
        for c, scale in self.tp_scale.items():
            tp[c] *= scale[g]
        return self.thresholds[g], tp, fp

    def fixed_curves(self, g: int) -> tuple[np.ndarray, np.ndarray]:
        """``(tp, fp)`` of replicate ``g`` on the main grid (C, K): only the noise
        of the FP counts, none of the range's (for the bias of OPIS)."""
        fp = self.weights[g] * (self.main_fp - self.fp_groups[g]).astype(np.float64)
        return np.asarray(self.main_tp, np.float64), fp


#: entries of a count array one bincount covers (its int64 output is 8x that)
_SPAN = 2**22


def _accumulate(target: np.ndarray, idx: np.ndarray) -> None:
    """``target[i] += (idx == i).sum()`` for every ``i``, in slices of ``_SPAN``
    entries so that no temporary is as large as ``target`` (which can hold
    ``GROUPS * C * K`` counts)."""
    n = len(target)
    if n <= _SPAN:
        target += np.bincount(idx, minlength=n).astype(target.dtype, copy=False)
        return
    part = idx >> 22 if _SPAN == 2**22 else idx // _SPAN
    for p in np.unique(part):
        lo = int(p) * _SPAN
        hi = min(n, lo + _SPAN)
        target[lo:hi] += np.bincount(idx[part == p] - lo, minlength=hi - lo).astype(
            target.dtype, copy=False)


def grid_cells(grid: np.ndarray, d: np.ndarray) -> np.ndarray:
    """``np.searchsorted(grid, d, side="left")`` for an even grid, by arithmetic:
    the first ``k`` with ``d <= grid[k]`` (``K`` beyond the last; NaN/inf: ``K``)."""
    K = len(grid)
    step = (grid[-1] - grid[0]) / (K - 1)
    with np.errstate(invalid="ignore", over="ignore"):
        u = np.ceil((d - grid[0]) / step)
    c = np.clip(np.nan_to_num(u, nan=K, posinf=K, neginf=0), 0, K).astype(np.int64)
    # the division may round across a grid point: one step of correction either way
    hi = c < K
    up = hi.copy()
    up[hi] = d[hi] > grid[c[hi]]
    c[up] += 1
    lo = c > 0
    dn = lo.copy()
    dn[lo] = d[lo] <= grid[c[lo] - 1]
    c[dn] -= 1
    return c


def _near_width(grid: np.ndarray, rep_grids: np.ndarray) -> tuple[float, float]:
    """The step of the even ``grid`` and, in steps, the largest shift of a
    replicate grid's point from the main one's (with room): a key farther
    from every grid point has the same cell on every grid."""
    step = (grid[-1] - grid[0]) / (len(grid) - 1)
    return step, float(np.max(np.abs(rep_grids - grid[None, :]))) / step + 1e-6


_LIBC = []


def _trim() -> None:
    """Hand the memory freed by a pass back to the system (glibc ``malloc_trim``).

    The worker threads' temporaries (1-32 MiB each) come from per-thread
    malloc arenas, which keep freed memory for reuse by the same thread;
    without a trim the process keeps a few hundred MiB it no longer uses,
    which the main thread (building the result) cannot reuse. No effect on
    any value; a no-op where glibc is not the C library."""
    if not _LIBC:
        try:
            import ctypes

            lib = ctypes.CDLL("libc.so.6")
            _LIBC.append(lib.malloc_trim)
        except (OSError, AttributeError):
            _LIBC.append(None)
    if _LIBC[0] is not None:
        _LIBC[0](0)


class SampledEngine:
    """Estimates from every positive pair and sampled negatives (module docstring).

    Parameters
    ----------
    negatives_per_query : ``S``, gallery rows drawn for each query (its
        negatives are those of other classes); ``S >= ng`` draws every pair.
    retrieval_queries : ``Q``, queries whose R@k and AP@R are computed
        exactly against the whole gallery (all of them when ``Q >= nq``).
    seed : seed of every draw (numpy ``default_rng``).
    block_bytes : accepted for symmetry with the other engines; the blocks of
        this engine have a fixed size so that the draws, hence the results,
        depend only on the input, ``S``, ``Q`` and the seed.
    """

    name = "sampled"

    def __init__(self, negatives_per_query: int = options.NEGATIVES_PER_QUERY,
                 retrieval_queries: int = options.RETRIEVAL_QUERIES, seed: int = options.SEED,
                 block_bytes: int = DEFAULT_BLOCK_BYTES):
        options.check("negatives_per_query", negatives_per_query)
        options.check("retrieval_queries", retrieval_queries)
        options.check("seed", seed)
        self.S = int(negatives_per_query)
        self.Q = int(retrieval_queries)
        self.seed = int(seed)
        self.block_bytes = check_block_bytes(block_bytes)

    # ------------------------------------------------------------------ public
    def run(self, prep: Prepared, spec: GridSpec, progress: Progress | None = None) -> EngineOutput:
        K = int(options.check("num_thresholds", spec.num_thresholds))
        if getattr(prep, "q_off", None) is not None:
            raise ConfigError("--engine sampled does not take per-row offsets (--calibration); "
                              "use --engine exact or dask")
        ctx = _Context(prep, self.S, self.seed, spec.min_class_rows)
        notes: dict = {"negatives_per_query": self.S, "retrieval_queries": self.Q,
                       "seed": self.seed, "groups": GROUPS, "block_rows": ctx.B,
                       "draws_per_block": ctx.S, "pairs_drawn": int(ctx.nq) * ctx.S,
                       "every_pair": ctx.exhaustive}
        explicit = explicit_range(spec)
        if explicit is not None:
            (lo, hi), source, passes = explicit, "explicit", 1
            rep_ranges = np.tile([lo, hi], (GROUPS, 1))
        else:
            a, b = far_fractions(spec)
            (lo, hi), rep_ranges = ctx.far_range(a, b, progress)
            check_range(lo, hi, "--far-range", f"{a:g}:{b:g} (estimated distances from the "
                        "sampled negatives)")
            source, passes = "far", ctx.passes + 1
        grid = np.linspace(lo, hi, K)
        rep_grids = np.stack([np.linspace(r[0], r[1], K) for r in rep_ranges])
        _trim()
        neg = ctx.count_negatives(grid, rep_grids, progress)
        _trim()
        with _one_blas_thread():  # the same products on every machine
            pos = ctx.count_positives(grid, rep_grids, progress)
        _trim()
        ret = ctx.retrieval(self.Q if spec.retrieval else 0, progress)
        _trim()
        notes["positives_sampled"] = pos["sampled_labels"]
        notes["retrieval_sample"] = int(ret["sampled"])
        notes["report_histogram_rows"] = int(neg["hist_rows"])
        w = 1.0 if ctx.exhaustive else ctx.ng / ctx.S  # Horvitz-Thompson
        group_fp = None if neg["group_fp"] is None else neg["group_fp"] * w
        sizes = np.bincount(ctx.group_of_draw, minlength=GROUPS)
        method = ("sampled negatives (uniform per query block, without replacement), exact "
                  "positives, delete-a-group jackknife over the draws")
        reps = Replicates(
            thresholds=rep_grids, fp=neg["fp_rep"], weights=ctx.ng / (ctx.S - sizes),
            tp=pos["tp_rep"], tp_scale=pos["tp_scale"],
            fpc=max(0.0, 1.0 - ctx.S / ctx.ng), method=method,
            main_thresholds=grid, main_tp=pos["tp"], main_fp=neg["fp"],
            fp_groups=neg["fp_groups"],
            parameters={"negatives_per_query": self.S, "retrieval_queries": self.Q,
                        "groups": GROUPS, "block_rows": ctx.B},
            seed=self.seed, retrieval_population=int(((ctx.pos_q > 0) & ctx.row_eval).sum()))
        return EngineOutput(
            thresholds=grid, range_source=source, class_tp=pos["tp"], class_fp=neg["fp"] * w,
            group_tp=pos["group_tp"], group_fp=group_fp, first_rank=ret["ret"].first_rank,
            ap_at_r=ret["ret"].ap, n_relevant=ret["ret"].n_rel, hits_at_r=ret["ret"].hits,
            hist_edges=report_edges(ctx.span, ctx.l2), hist_pos=pos["hist_pos"],
            hist_neg=np.rint(neg["hist_neg"] * w).astype(np.int64), passes=passes, notes=notes,
            replicates=reps)


    def diagnosis_pass(self, prep: Prepared, t: float, block_bytes: int,
                       progress: Progress | None = None) -> dict:
        """SPEC 16 estimated from this engine's draws (same ``S`` and seed):
        ``engines/diagnose_sampled.py``."""
        from .diagnose_sampled import sampled_pass

        res = sampled_pass(prep, t, _Context(prep, self.S, self.seed), block_bytes, progress)
        res["estimate"]["seed"] = self.seed
        return res


class _Context(RunContext):
    """Per-run constants and the three passes over the sampled pairs (``G``:
    the groups of rows; ``GROUPS``: those of the draws)."""

    def __init__(self, prep: Prepared, S: int, seed: int, min_class_rows: int = 2):
        super().__init__(prep, min_class_rows)
        self.seed = seed
        self.exhaustive = S >= self.ng
        self.S = min(S, self.ng)
        # rows per block: a power of two with B * S keys near BLOCK_KEYS, in [16, 1024],
        # and at least MIN_BLOCKS blocks: each block's draws serve all of its
        # queries, so the blocks' independent draws (n_blocks * S) are what the
        # global FAR, hence the range, is estimated from; a "hub" row drawn for
        # a large block moves it a lot
        b = min(BLOCK_KEYS // self.S, self.nq // MIN_BLOCKS)
        self.B = int(min(1024, max(16, 2 ** int(math.floor(math.log2(max(b, 1)))))))
        if self.exhaustive:
            # every pair: the exact engine's product shape (full tiles of rows
            # against the gallery in its order), so that even the rounding agrees
            self.B = tile_rows(self.ng)
        self.order = np.random.default_rng([seed, 0]).permutation(self.nq)
        self.n_blocks = -(-self.nq // self.B)
        self.far_scale = FAR_BINS / (self.span[1] - self.span[0])
        #: bound on |float32 key - float64 key| of every pair (base.key_margins):
        #: a decision within it of a boundary is made by the float64 key (SPEC 2)
        self.margin = float(key_margins(prep).max()) if self.nq else 0.0
        self.group_of_draw = np.arange(self.S) % GROUPS

    # -- the sampled pairs -----------------------------------------------------
    def draws(self, b: int) -> np.ndarray:
        """Gallery columns drawn for block ``b`` (the same on every pass)."""
        if self.exhaustive:
            return np.arange(self.ng)
        rng = np.random.default_rng([self.seed, 1, b])
        return rng.choice(self.ng, self.S, replace=False)

    def products(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """float32 inner products (len(rows), len(cols)) of query ``rows`` and the
        drawn gallery ``cols`` (with every pair drawn: as the exact engine's tiles)."""
        prep = self.prep
        if not self.exhaustive:
            return prep.xq[rows] @ prep.xg[cols].T
        pad = np.zeros((self.B, prep.dim), np.float32)
        pad[:len(rows)] = prep.xq[rows]
        return (pad @ prep.xg.T)[:len(rows)]

    def keys_of(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The keys (``pair_keys`` of :meth:`products`) of query ``rows`` and
        gallery ``cols``, and which of these pairs are negatives."""
        prep = self.prep
        keys = pair_keys(self.products(rows, cols), prep.qn2[rows], prep.gn2[cols], self.l2)
        return keys, prep.g_class[cols][None, :] != prep.q_class[rows][:, None]

    def _block(self, b: int, cut: float):
        """The sampled negative pairs of block ``b`` whose float64 key may be
        ``<= cut`` (float32 key ``<= cut`` + the margin): ``(rows, draw, keys,
        cls, evaluated, cols)`` (see :meth:`blocks`)."""
        prep = self.prep
        rows = self.order[b * self.B:(b + 1) * self.B]
        cols = self.draws(b)
        prods = self.products(rows, cols)
        M = self.margin
        if not math.isfinite(cut):
            r, c = np.nonzero(np.ones(prods.shape, bool))
        elif self.l2:
            rhs = (prep.qn2[rows][:, None] + prep.gn2[cols][None, :]) - (cut + M)
            slack = 1e-5 * (np.abs(rhs) + abs(cut) + M) + 1e-30
            r, c = np.nonzero(2 * prods >= (rhs - slack).astype(np.float32))
        else:
            r, c = np.nonzero(prods >= np.float32(1.0 - cut - M - 1e-5))
        gc = cols[c]
        qc = prep.q_class[rows[r]]
        neg = prep.g_class[gc] != qc
        r, c, qc, gc = r[neg], c[neg], qc[neg], gc[neg]
        s = prods[r, c].astype(np.float64)
        keys = (prep.qn2[rows[r]] + prep.gn2[gc]) - 2.0 * s if self.l2 else 1.0 - s
        ok = keys <= cut + M
        return rows[r[ok]], c[ok], keys[ok], qc[ok], self.evaluated[qc[ok]], gc[ok]

    def refine(self, rows: np.ndarray, cols: np.ndarray, keys: np.ndarray,
               which: np.ndarray) -> np.ndarray:
        """``keys`` with the float64 keys (``base.exact_keys``) of the pairs
        (query ``rows``, gallery ``cols``) where ``which``: the decisions of
        float32 keys within their margin of a boundary (SPEC 2)."""
        idx = np.flatnonzero(which)
        if len(idx):
            keys = keys.copy()
            order = idx[np.argsort(cols[idx], kind="stable")]  # fastest by gallery row
            keys[order] = exact_keys(self.prep, rows[order], cols[order])
        return keys

    def uncertain(self, keys: np.ndarray, grid: np.ndarray, rep_grids: np.ndarray | None = None,
                  near_w: float = 0.0) -> np.ndarray:
        """Keys whose cell on ``grid`` (or, within ``near_w`` steps of one of its
        points, on a replicate grid) may differ for a key within the margin:
        they must be decided by their float64 key."""
        M = self.margin
        d_lo = key_to_dist(keys - M, self.l2)
        d_hi = key_to_dist(keys + M, self.l2)
        unc = grid_cells(grid, d_lo) != grid_cells(grid, d_hi)
        if rep_grids is not None:
            K = len(grid)
            step = (grid[-1] - grid[0]) / (K - 1)
            with np.errstate(invalid="ignore"):
                u = (d_lo - grid[0]) / step
                w = near_w + (d_hi - d_lo) / step
                near = np.flatnonzero(np.abs(u - np.clip(np.rint(u), 0, K - 1)) <= w)
            for g in range(len(rep_grids)):
                unc[near] |= (grid_cells(rep_grids[g], d_lo[near])
                              != grid_cells(rep_grids[g], d_hi[near]))
        return unc

    def uncertain_bins(self, keys: np.ndarray, lo: float, scale: float) -> np.ndarray:
        """Keys within the margin of a bin edge of an even histogram."""
        with np.errstate(invalid="ignore", over="ignore"):
            x = (keys - lo) * scale
            fr = x - np.floor(x)
        ms = self.margin * scale * (1 + 1e-9) + 1e-12
        return np.isfinite(x) & ((fr < ms) | (fr > 1.0 - ms))

    def blocks(self, progress, stage: str, cut: float, first: int = 0, stop: int | None = None,
               post=None):
        """The sampled negative pairs with key ``<= cut`` of blocks ``[first, stop)``.

        Yields, in block order, ``(rows, draw, keys, cls, evaluated, cols)`` per
        block (or ``post`` of that tuple, computed in the worker): for each
        pair, its query row, its position in the block's draws (``draw %
        GROUPS`` is its group), its key (as ``pair_keys``, from float32
        products), its query's class, whether that class is evaluated, and
        its gallery column: every pair whose float32 key lies at most its
        margin above the cut (every pair whose float64 key may lie below
        it). The products are filtered in float32 with a margin first, so
        that only the pairs near or below the cut are turned into keys. Every
        decision of the callers is that of the float64 keys: a key within its
        margin of a boundary is recomputed (:meth:`refine`). Blocks run on
        ``workers.parallel_map`` (one-thread BLAS: the same bytes on every machine).
        """
        stop = self.n_blocks if stop is None else stop
        progress = progress or quiet
        progress(stage, 0, self.nq)

        def one(b):
            out = self._block(b, cut)
            return out if post is None else post(out)

        for b, res in zip(range(first, stop), _parallel(one, range(first, stop))):
            yield res
            progress(stage, min(self.nq, (b + 1) * self.B), self.nq)

    def _far_bins(self, keys):
        return value_bins(keys, self.span[0], self.far_scale, FAR_BINS)

    # -- pass 1 and 2: the FAR-defined range --------------------------------------
    def far_range(self, a: float, b: float, progress):
        """``((lo, hi), (G, 2) replicate ranges)`` from the sampled negatives."""
        G, F = GROUPS, FAR_BINS
        m_total = int(self.M[self.evaluated].sum())
        sizes = np.bincount(self.group_of_draw, minlength=G)
        ranks = [counts.ceil_rank(f, m_total) for f in (a, b)]
        # the ranks each subset (all draws, and all but group g) needs
        need = {}
        for end, r in enumerate(ranks):
            for sub in range(-1, G):
                s_sub = self.S - (0 if sub < 0 else int(sizes[sub]))
                need[sub, end] = max(1, math.ceil(Fraction(r * s_sub, self.ng)))
        with _one_blas_thread():
            pilot = self._pilot_keys()
        got = self._bracketed(need, pilot, (a, b), progress)
        if got is not None:
            self.passes = 1
            return got
        cut = math.inf if len(pilot) < 1000 or 1.5 * b + 0.01 >= 1.0 else \
            float(np.quantile(pilot, 1.5 * b + 0.01))
        # the float64 key of a rank lies in the bracket of its float32 bin
        pad = bracket_bins(self.margin, self.far_scale)
        while True:
            hist = np.zeros(G * F, np.int64)
            for rows, draw, keys, cls, ev, _ in self.blocks(progress, "far range", cut):
                grp = self.group_of_draw[draw[ev]]
                hist += np.bincount(grp * F + self._far_bins(keys[ev]), minlength=G * F)
            hist = hist.reshape(G, F)
            total = hist.sum(axis=0)
            wanted = []
            short = False
            for (sub, end), m in need.items():
                h = total if sub < 0 else total - hist[sub]
                if m > int(h.sum()):
                    if math.isfinite(cut):
                        short = True
                        break
                    m = int(h.sum())  # fewer sampled negatives than the rank: the largest
                    if m < 1:
                        raise ConfigError("--far-range: no negative pair was drawn; raise "
                                          "--negatives-per-query")
                br = bracket(h, m, pad)
                # every pair of the bracket must have been read (keys <= cut)
                if math.isfinite(cut) and self.span[0] + (br.hi + 1) / self.far_scale > cut:
                    short = True
                    break
                wanted.append((sub, end, br))
            if not short:
                break
            cut = math.inf  # the pilot's cut was too low: every pair
        b_lo = min(w[2].lo for w in wanted)
        b_hi = max(w[2].hi for w in wanted)
        top = self.span[0] + (b_hi + 1) / self.far_scale
        vals, grps, bins = [], [], []
        for rows, draw, keys, cls, ev, gcol in self.blocks(
                progress, "far range values", min(cut, top * (1 + 1e-9) + 1e-12)):
            kb = self._far_bins(keys)
            sel = ev & (kb >= b_lo) & (kb <= b_hi)
            vals.append(self.refine(rows[sel], gcol[sel], keys[sel],
                                    np.ones(int(sel.sum()), bool)))
            grps.append(self.group_of_draw[draw[sel]])
            bins.append(kb[sel])
        vals = np.concatenate(vals)
        grps = np.concatenate(grps)
        kb = np.concatenate(bins)
        res = np.zeros((G + 1, 2))
        for sub, end, br in wanted:
            res[sub + 1, end] = key_to_dist(br.select(vals[br.holds(kb) & (grps != sub)]), self.l2)
        self.passes = 2 if math.isfinite(cut) else 3
        return (float(res[0, 0]), float(res[0, 1])), res[1:]

    def _pilot_keys(self) -> np.ndarray:
        """Every sampled negative key (evaluated queries) of the first blocks, sorted:
        a twentieth of the blocks, at least 16 (all of them for small inputs)."""
        n = min(self.n_blocks, max(4, -(-self.n_blocks // 20)))
        # every key of a block is not needed: about 2**21 in all, evenly spread
        step = max(1, (n * self.B * self.S) >> 21)
        keys = []
        for b in range(n):
            rows = self.order[b * self.B:(b + 1) * self.B]
            rows = rows[self.row_eval[rows]]
            cols = self.draws(b)
            k, neg = self.keys_of(rows, cols)
            # a copy: a strided view would keep the block's every key alive
            keys.append(k[neg][::step].copy())
            del k, neg
        self.pilot_draws = min(n * self.S, n * self.B)
        return np.sort(np.concatenate(keys)) if keys else np.zeros(0)

    def _bracketed(self, need: dict, pilot: np.ndarray, fars, progress):
        """The order statistics in one pass, keeping the keys inside brackets
        around the pilot's estimates; None when a bracket misses (or the pilot
        is too small to help)."""
        n = len(pilot)
        if n < 1000 or self.exhaustive:
            return None
        G = GROUPS
        br = []
        for f in fars:
            # the pilot's draws and queries are few and correlated: 3 sd of a
            # proportion over the smaller of them, plus 3% of F
            half = 0.02 * f + 3 * math.sqrt(f * (1 - f) / self.pilot_draws)
            lo_f, hi_f = f - half, f + half
            if hi_f >= 1.0:
                return None
            lo_k = float(pilot[int(lo_f * (n - 1))]) if lo_f > 0 else -math.inf
            br.append((lo_k, float(pilot[min(n - 1, int(math.ceil(hi_f * (n - 1))))])))
        cut = max(h for _, h in br)
        below = np.zeros((2, G), np.int64)
        vals: list = [[], []]
        grps: list = [[], []]
        M = self.margin
        for rows, draw, keys, cls, ev, gcol in self.blocks(progress, "far range", cut):
            k = keys[ev]
            g = self.group_of_draw[draw[ev]].astype(np.int8)
            # the keys in a bracket are selected by rank, those near its ends
            # counted below it or not: all by their float64 keys
            near = np.zeros(len(k), bool)
            for lo_k, hi_k in br:
                near |= (k >= lo_k - M) & (k <= hi_k + M)
            k = self.refine(rows[ev], gcol[ev], k, near)
            for end, (lo_k, hi_k) in enumerate(br):
                below[end] += np.bincount(g[k < lo_k], minlength=G)
                sel = (k >= lo_k) & (k <= hi_k)
                vals[end].append(k[sel])
                grps[end].append(g[sel])
        res = np.zeros((G + 1, 2))
        for end in range(2):
            v = np.concatenate(vals[end])
            vals[end] = None
            gg = np.concatenate(grps[end])
            grps[end] = None
            # a selection, not a sort: the (m - below)-th smallest of each subset
            # (all draws last, since it reorders v in place)
            for sub in [*range(G), -1]:
                m = need[sub, end]
                bl = int(below[end].sum() - (below[end][sub] if sub >= 0 else 0))
                vs = v if sub < 0 else v[gg != sub]
                if not bl < m <= bl + len(vs):
                    return None
                k = m - bl - 1
                vs.partition(k)
                res[sub + 1, end] = key_to_dist(vs[k], self.l2)
        return (float(res[0, 0]), float(res[0, 1])), res[1:]

    # -- pass 3: negatives on the grid --------------------------------------------
    def count_negatives(self, grid: np.ndarray, rep_grids: np.ndarray, progress) -> dict:
        """FP counts on the grid (C, K) and, for each replicate, of the other groups'
        draws on its own grid (G, C, K); group FP; the report histogram."""
        K, C, G = len(grid), self.C, GROUPS
        # A replicate's cell is the main one except for pairs within the largest
        # shift of a grid point ("near"). Counted (per cell, not cumulative):
        #   acc     every pair on the main grid;   nm  the near ones among them;
        #   gm[j]   group j's pairs on the main grid;
        #   x[g]    near pairs of the other groups on grid g, plus group g's
        #           near pairs on the main grid.
        # Replicate g on its grid is then acc - nm - gm[g] + x[g] (the far
        # pairs of the other groups, and their near pairs placed on its grid),
        # and on the main grid acc - gm[g].
        step, near_w = _near_width(grid, rep_grids)
        per_class = int(np.bincount(self.prep.q_class, minlength=C).max()) * self.S
        dt = np.uint16 if per_class < 2**16 else np.int32 if per_class < 2**31 else np.int64
        acc = np.zeros(C * K, np.int64)
        nm = np.zeros(C * K, np.int64)
        gm = np.zeros(G * C * K, dt)
        x = np.zeros(G * C * K, dt)
        gacc = np.zeros((self.G, K + 1), np.int64) if self.G else None
        top = max(float(grid[-1]), float(rep_grids[:, -1].max()))
        cut = float(dist_to_key(top, self.l2))
        cut = cut * (1 + 1e-9) + 1e-12
        parts: dict = {"acc": [], "nm": [], "gm": [], "x": []}
        targets = {"acc": acc, "nm": nm, "gm": gm, "x": x}
        held = [0]

        def flush():
            # one bincount over many blocks: much cheaper than np.add.at per block
            for name, lst in parts.items():
                if lst:
                    _accumulate(targets[name], np.concatenate(lst))
                    lst.clear()
            held[0] = 0

        def post(block):
            return self._negative_cells(block, grid, rep_grids, near_w, step)

        for res in self.blocks(progress, "counts", cut, post=post):
            for name in parts:
                parts[name].extend(res[name])
            held[0] += res["size"]
            if held[0] >= 2**23:
                flush()
            if gacc is not None:
                gacc += res["gacc"].reshape(self.G, K + 1)
        flush()
        far_all = acc - nm
        gm = gm.reshape(G, C, K)
        fp_rep = x.reshape(G, C, K)
        for g in range(G):
            fp_rep[g] = (far_all.reshape(C, K) - gm[g] + fp_rep[g]).astype(dt, copy=False)
        np.cumsum(fp_rep, axis=2, out=fp_rep)
        np.cumsum(gm, axis=2, out=gm)
        fp = np.cumsum(acc.reshape(C, K), axis=1)
        with _one_blas_thread():
            hist, hist_rows = self._report_negatives()
        return {"fp": fp, "fp_rep": fp_rep, "fp_groups": gm,
                "group_fp": None if gacc is None else np.cumsum(gacc[:, :K], axis=1),
                "hist_neg": hist, "hist_rows": hist_rows}

    def _negative_cells(self, block, grid, rep_grids, near_w: float, step: float) -> dict:
        """In the worker: the flat cell indices of a block's pairs for each
        counter of ``count_negatives`` (by their float64 keys where a float32
        key is near a grid point), their size, and the group counts."""
        K, C, G, NG = len(grid), self.C, GROUPS, self.G
        rows, draw, keys, cls, _, gcol = block
        keys = self.refine(rows, gcol, keys, self.uncertain(keys, grid, rep_grids, near_w))
        d = key_to_dist(keys, self.l2)
        cell = grid_cells(grid, d)
        inr = cell < K
        grp = self.group_of_draw[draw]
        main = cls * K + cell
        out = {"acc": [main[inr]], "gm": [(grp[inr] * C) * K + main[inr]]}
        u = (d - grid[0]) / step
        near = np.abs(u - np.clip(np.rint(u), 0, K - 1)) <= near_w
        nin = near & inr
        out["nm"] = [main[nin]]
        out["x"] = [(grp[nin] * C) * K + main[nin]]
        dn, cn, gn = d[near], cls[near], grp[near]
        for g in range(G):
            cg = grid_cells(rep_grids[g], dn)
            sel = (cg < K) & (gn != g)
            out["x"].append((g * C + cn[sel]) * K + cg[sel])
        out["size"] = 2 * len(d) + len(dn) * (G + 2)
        out["gacc"] = None if NG == 0 else np.bincount(
            self.prep.q_group[rows[inr]] * (K + 1) + cell[inr], minlength=NG * (K + 1))
        return out

    def _report_negatives(self) -> tuple[np.ndarray, int]:
        """Sampled negatives of the report rows (evaluated), every distance."""
        hist = np.zeros(REPORT_BINS, np.int64)
        rscale = report_scale(self.span)
        pos_in_order = np.empty(self.nq, np.int64)
        pos_in_order[self.order] = np.arange(self.nq)
        picked = np.flatnonzero(self.row_sample & self.row_eval)
        blk = pos_in_order[picked] // self.B
        for b in np.unique(blk):
            rows = picked[blk == b]
            cols = self.draws(int(b))
            keys, neg = self.keys_of(rows, cols)
            ri, ci = np.nonzero(neg)
            k = self.refine(rows[ri], cols[ci], keys[ri, ci],
                            self.uncertain_bins(keys[ri, ci], self.span[0], rscale))
            hist += np.bincount(value_bins(k, self.span[0], rscale, REPORT_BINS),
                                minlength=REPORT_BINS)
        return hist, len(picked)

    # -- positives ---------------------------------------------------------------
    def count_positives(self, grid: np.ndarray, rep_grids: np.ndarray, progress) -> dict:
        """TP counts from every within-class pair (sampled query rows for a class
        over budget, scaled), on the grid (C, K) and on each replicate's grid
        (G, C, K); group TP; the positives of the report histogram."""
        prep = self.prep
        K, C, G = len(grid), self.C, GROUPS
        _, near_w = _near_width(grid, rep_grids)
        tp = np.zeros(C * (K + 1), np.int64)
        most = int(self.P.max(initial=0))
        rep = np.zeros(G * C * K, np.uint16 if most < 2**16 else np.int32 if most < 2**31
                       else np.int64)
        gtp = np.zeros((self.G, K + 1)) if self.G else None
        hist = np.zeros(REPORT_BINS, np.int64)
        rscale = report_scale(self.span)
        scale = np.ones(C)  # nqc / sampled rows, for the classes over budget
        tp_scale: dict = {}
        sampled_labels: list = []
        buf: list = []
        held = [0]

        def flush():
            if not buf:
                return
            keys = np.concatenate([b[0] for b in buf])
            cls = np.concatenate([b[1] for b in buf])
            qrow = np.concatenate([b[2] for b in buf])
            rgrp = np.concatenate([b[3] for b in buf])
            gcol = np.concatenate([b[4] for b in buf])
            buf.clear()
            held[0] = 0
            # by float64 keys near a grid point or a report bin edge (SPEC 2)
            unc = self.uncertain(keys, grid, rep_grids, near_w)
            rep_rows = self.row_sample[qrow] & self.row_eval[qrow]
            unc |= rep_rows & self.uncertain_bins(keys, self.span[0], rscale)
            unc &= np.isfinite(keys)  # not the self pair (+inf)
            keys = self.refine(qrow, gcol, keys, unc)
            d = key_to_dist(keys, self.l2)
            cell = grid_cells(grid, d)  # K beyond the grid (and for the self pair, inf)
            _accumulate(tp, cls * (K + 1) + cell)
            for g in range(G):
                cg = grid_cells(rep_grids[g], d)
                sel = (cg < K) & (rgrp != g)
                _accumulate(rep[g * C * K:(g + 1) * C * K], cls[sel] * K + cg[sel])
            if gtp is not None:
                gtp[:] += np.bincount(prep.q_group[qrow] * (K + 1) + cell, weights=scale[cls],
                                      minlength=self.G * (K + 1)).reshape(self.G, K + 1)
            hs = self.row_sample[qrow] & self.row_eval[qrow] & np.isfinite(d)
            if hs.any():
                hist[:] += np.bincount(value_bins(dist_to_key(d[hs], self.l2), self.span[0],
                                                  rscale, REPORT_BINS), minlength=REPORT_BINS)

        for item in self._positive_pairs(scale, tp_scale, sampled_labels, progress):
            buf.append(item)
            held[0] += len(item[0])
            if held[0] >= 2**21:
                flush()
        flush()
        tp = np.cumsum(tp.reshape(C, K + 1)[:, :K], axis=1)
        if tp_scale:
            tp = tp * scale[:, None]
        tp_rep = rep.reshape(G, C, K)
        np.cumsum(tp_rep, axis=2, out=tp_rep)
        return {"tp": tp, "tp_rep": tp_rep, "tp_scale": tp_scale,
                "group_tp": None if gtp is None else np.cumsum(gtp[:, :K], axis=1),
                "hist_pos": hist, "sampled_labels": sampled_labels}

    def _positive_pairs(self, scale: np.ndarray, tp_scale: dict, sampled_labels: list,
                        progress):
        """The keys of every within-class pair, class by class, as flat
        ``(keys, class, query row, replicate group, gallery column)`` runs of
        at most about 2**22 pairs (the self pair's key +inf). A class over
        budget keeps a seeded sample of its query rows, in replicate groups,
        and records its scales (``scale``, ``tp_scale``, ``sampled_labels``)."""
        prep, C = self.prep, self.C
        progress = progress or quiet
        q_start = np.searchsorted(prep.q_class, np.arange(C), side="left")
        q_end = np.searchsorted(prep.q_class, np.arange(C), side="right")
        progress("positives", 0, C)
        for c in range(C):
            qs, qe = int(q_start[c]), int(q_end[c])
            gs, ge = int(prep.class_start[c]), int(prep.class_end[c])
            nqc, ngc = qe - qs, ge - gs
            if nqc == 0 or ngc == 0:
                continue
            budget = max(self.S * nqc, POSITIVE_BUDGET)
            qrows = np.arange(qs, qe)
            grp_rows = np.full(nqc, -1, np.int64)
            if nqc * ngc > budget and not self.exhaustive:
                m = max(GROUPS, budget // ngc)
                rng = np.random.default_rng([self.seed, 2, c])
                qrows = np.sort(rng.choice(qrows, m, replace=False))
                grp_rows = np.arange(m) % GROUPS
                sizes = np.bincount(grp_rows, minlength=GROUPS)
                scale[c] = nqc / m
                tp_scale[c] = nqc / (m - sizes)
                sampled_labels.append(prep.class_labels[c])
            step = max(1, 2**22 // ngc)
            for j0 in range(0, len(qrows), step):
                rr = qrows[j0:j0 + step]
                keys = drop_self(pair_keys(prep.xq[rr] @ prep.xg[gs:ge].T, prep.qn2[rr],
                                           prep.gn2[gs:ge], self.l2), prep.self_col[rr], gs)
                n = keys.size
                yield (keys.ravel(), np.full(n, c, np.int64), np.repeat(rr, ngc),
                       np.repeat(grp_rows[j0:j0 + step], ngc), np.tile(np.arange(gs, ge), len(rr)))
            if c % 1024 == 0 or c == C - 1:
                progress("positives", c + 1, C)

    # -- retrieval ---------------------------------------------------------------
    def retrieval(self, Q: int, progress) -> dict:
        """R@k and AP@R of a seeded sample of queries, exact against the gallery."""
        prep = self.prep
        nq, ng = self.nq, self.ng
        progress = progress or quiet
        ret = Retrieval.zeros(nq)
        if Q >= nq:
            picked = np.arange(nq)
        else:
            picked = np.sort(np.random.default_rng([self.seed, 3]).choice(nq, Q, replace=False))
        # queries of evaluated classes with a positive (SPEC 3: an excluded
        # class is in no average; at the default every such query is one)
        picked = picked[(self.pos_q[picked] > 0) & self.row_eval[picked]]
        # rows per product: the exact engine's tile where it fits (the same
        # shape, so the same rounding), always padded to full size
        T = tile_rows(ng)
        if T * ng > RETRIEVAL_KEYS:
            T = int(max(1, min(256, RETRIEVAL_KEYS // max(ng, 1))))
        progress("retrieval", 0, len(picked))
        xgT = prep.xg.T

        def tile(s):
            rr = picked[s:s + T]
            pad = np.zeros((T, prep.dim), np.float32)
            pad[:len(rr)] = prep.xq[rr]
            prods = pad @ xgT
            del pad
            res = []
            for i, q in enumerate(rr):
                R = int(self.pos_q[q])
                L = int(list_length(R, ng))
                # one row of float64 keys at a time (the same arithmetic as
                # pair_keys over the tile), not T x ng of them
                row = pair_keys(prods[i:i + 1], prep.qn2[q:q + 1], prep.gn2, self.l2)[0]
                if prep.self_col[q] >= 0:
                    row[prep.self_col[q]] = np.inf
                top = nearest_exact(prep, q, row, L, self.margin)
                c = prep.q_class[q]
                hits = ((top >= prep.class_start[c]) & (top < prep.class_end[c])
                        & (top != prep.self_col[q]))
                f, a = retrieval_at_r(hits[None, :], np.array([R]), beyond=ng + 1)
                res.append((q, f[0], a[0], R, int(np.count_nonzero(hits[:R]))))
            return res

        starts = range(0, len(picked), T)
        for s, res in zip(starts, _parallel(tile, starts)):
            for q, *values in res:
                ret.put(q, Retrieval(*values))
            progress("retrieval", min(s + T, len(picked)), len(picked))
        return {"ret": ret, "sampled": len(picked)}
