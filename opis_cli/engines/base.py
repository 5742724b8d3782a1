"""What every engine shares: the contract, the grid, the tile shape, the key space.

An engine turns prepared rows (``opis_cli.prepare.Prepared``) and a
:class:`GridSpec` into an :class:`EngineOutput`: per-class (and per-group)
cumulative TP/FP counts on the threshold grid and the per-query retrieval
results. Everything downstream (curves, metrics, the result) is computed
from that output alone.

Engines compare *keys*, not distances: a key is a float64 number monotone
in the distance (smaller = closer), computed from a float32 inner product
``s`` of a query and a gallery row:

* cosine: ``key = d = 1 - s`` (rows already L2-normalised);
* l2: ``key = d**2 = |q|^2 + |g|^2 - 2 s`` (the squared distance).

:func:`pair_keys` is that formula for numpy code (the compiled kernels have
their own copy, ``_kernels._key``, tested to agree); :func:`key_to_dist`
and :func:`dist_to_key` convert, :func:`key_span` bounds every key of an
input, and :func:`value_bins` / :func:`rank_bin` are the histogram
bookkeeping of the order-statistic passes and of the report histogram.

This module imports no compiled code, so the memory model (``opis_cli/memory.py``)
and the readers can use it without loading numba.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Callable, Protocol, runtime_checkable

import numpy as np

from ..counts import ceil_rank as order_rank  # noqa: F401 (the rank of t(F), SPEC 5)
from ..errors import ConfigError
from ..prepare import Prepared

Progress = Callable[[str, int, int], None]

#: default bytes of one block of inner products
DEFAULT_BLOCK_BYTES = 512 * 2**20
#: bytes of one tile of inner products (one BLAS call), see tile_rows()
TILE_BYTES = 256 * 2**20
#: bins of the distance histogram kept in the result
REPORT_BINS = 512
#: query rows sampled for the report histogram
REPORT_ROWS = 1024
#: histogram bins of the order-statistic passes (exact and knn engines)
FAR_BINS = 2**16


@dataclass(frozen=True)
class GridSpec:
    """How the calibration range is chosen (SPEC 5)."""

    num_thresholds: int = 101
    far_range: tuple[float, float] = (0.01, 0.1)
    calibration_range: tuple[float, float] | None = None
    #: the verification view (SPEC 14): ``(p_target, c_miss, c_fa)`` of the
    #: detection cost, or None to skip it (it costs a pass, see engines/verify.py)
    verification: tuple[float, float, float] | None = None
    #: SPEC 3's ``--min-class-rows``: a class with fewer rows is not evaluated
    #: (its rows stay negatives of the others); 2 adds nothing to P > 0, M > 0
    min_class_rows: int = 2
    #: rank the neighbours of every query (SPEC 6's retrieval numbers); False
    #: skips that work (``evaluate(include=...)`` without "retrieval")
    retrieval: bool = True


@dataclass(frozen=True)
class OperatingPoints:
    """Exact global counts at the thresholds that can matter for SPEC 14.

    For one set of pairs (the evaluated classes, or one group) with ``P``
    positives and ``M`` negatives: ``tp[i]`` / ``fp[i]`` are the positive /
    negative pairs with distance ``<= dist[i]`` (increasing). Where ``real[i]``
    the threshold is a pair distance; elsewhere the point only carries the
    counts of every pair below the next points (the start of a stretch of
    candidate distances), and is never a threshold itself. Every distance
    that can minimise the EER or the detection cost, or be a FNMR-at-FMR
    order statistic, is a real point (``engines/verify.py``).
    """

    dist: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    real: np.ndarray
    P: int
    M: int
    #: the histograms the points came from (positives, negatives per bin, even
    #: in key space over the key span): every bin edge is an exact operating point
    hist_pos: np.ndarray | None = field(default=None, repr=False)
    hist_neg: np.ndarray | None = field(default=None, repr=False)


@dataclass(frozen=True)
class EngineOutput:
    """What an engine measured; everything downstream is computed from this.

    ``class_tp[c, k]`` / ``class_fp[c, k]`` (C, K) int64 are the numbers of
    positive / negative pairs of class ``c`` with distance ``<= thresholds[k]``
    (cumulative over the grid: TP and FP of SPEC 3); likewise ``group_tp`` /
    ``group_fp`` (G, K) for groups, None without groups. Per-query arrays
    (nq,) are in the prepared (class-sorted) query order: ``first_rank`` (the
    1-based rank of the first relevant item, 0 for a query without one),
    ``ap_at_r`` and ``n_relevant`` (R). ``hist_edges`` (REPORT_BINS + 1,)
    distances and ``hist_pos`` / ``hist_neg`` (REPORT_BINS,) counts are the
    report histogram; ``passes`` the passes over the pairs. ``notes``
    carries engine-specific facts for provenance (e.g. truncation of the
    knn engine).
    """

    thresholds: np.ndarray
    range_source: str
    class_tp: np.ndarray
    class_fp: np.ndarray
    group_tp: np.ndarray | None
    group_fp: np.ndarray | None
    first_rank: np.ndarray
    ap_at_r: np.ndarray
    n_relevant: np.ndarray
    hist_edges: np.ndarray
    hist_pos: np.ndarray
    hist_neg: np.ndarray
    passes: int
    notes: dict = field(default_factory=dict)
    #: the verification view's operating points of the evaluated classes and of
    #: each group (None where not asked for, not evaluated, or not measured)
    verification: OperatingPoints | None = None
    group_verification: tuple[OperatingPoints | None, ...] | None = None
    #: an engine that samples pairs (SPEC 15): its jackknife replicates
    #: (``sampled.Replicates``), from which ``metrics/estimate.py`` makes the
    #: intervals; None for the engines that count every pair they report.
    #: Its counts (``class_fp``, ...) are then float64 estimates.
    replicates: object | None = None
    #: per query (nq,), in the order of ``first_rank``: how many of its R nearest
    #: gallery rows are positives (R = ``n_relevant``; SPEC 6's R-Precision is
    #: ``hits_at_r / R`` averaged over queries with R > 0). None: not measured.
    hits_at_r: np.ndarray | None = None


@dataclass(frozen=True)
class RunRows:
    """Which pairs a run counts, fixed once per run by every engine: SPEC 3's
    per-class pair totals ``P``, ``M`` (C,) and evaluated classes, the
    evaluated query rows ``row_eval`` (nq,), and the rows of the report
    histogram ``row_sample`` (nq,): every k-th query, about REPORT_ROWS."""

    P: np.ndarray
    M: np.ndarray
    evaluated: np.ndarray
    row_eval: np.ndarray
    row_sample: np.ndarray

    @classmethod
    def of(cls, prep: Prepared, min_class_rows: int = 2) -> "RunRows":
        from .. import counts

        P, M = prep.class_pair_counts()
        evaluated = counts.evaluated(P, M, prep.class_rows, min_class_rows)
        nq = len(prep.q_rows)
        row_sample = np.zeros(nq, bool)
        row_sample[:: max(1, -(-nq // REPORT_ROWS))] = True
        return cls(P, M, evaluated, evaluated[prep.q_class], row_sample)


class RunContext:
    """The per-run constants that the numpy engines (knn, sampled) share:
    ``prep``, ``l2``, ``nq``, ``ng``, ``C`` classes, ``G`` groups, the
    :class:`RunRows` fields, ``pos_q`` (:func:`query_positives`) and the
    key ``span`` (:func:`key_span`)."""

    def __init__(self, prep: Prepared, min_class_rows: int = 2):
        self.prep = prep
        self.l2 = prep.metric == "l2"
        self.nq, self.ng = len(prep.q_rows), len(prep.g_rows)
        self.C = prep.n_classes
        self.G = len(prep.group_labels) if prep.group_labels is not None else 0
        rr = RunRows.of(prep, min_class_rows)
        self.P, self.M, self.evaluated = rr.P, rr.M, rr.evaluated
        self.row_eval, self.row_sample = rr.row_eval, rr.row_sample
        self.pos_q = query_positives(prep)
        self.span = key_span(prep)


@runtime_checkable
class Engine(Protocol):
    """What ``opis_cli.evaluate`` needs of an engine (exact, knn, dask, ...).

    Optional: ``diagnosis_pass`` (the signature of ``diagnose.PassRunner``)
    runs SPEC 16's pass itself; ``session()``, a context manager, holds what
    the passes of one ``evaluate()`` share (the Dask engine's local cluster),
    entered before ``run`` and exited after the diagnosis, on return or raise.
    """

    name: str

    def run(self, prep: Prepared, spec: GridSpec,
            progress: Progress | None = None) -> EngineOutput:
        """Count the pairs of ``prep`` on the grid that ``spec`` defines."""
        ...


def quiet(stage: str, done: int, total: int) -> None:
    """The ``Progress`` of a caller that wants none: ``progress or quiet``."""


def check_block_bytes(block_bytes: int) -> int:
    """The block size in bytes, checked (every engine takes one)."""
    if block_bytes < 1:
        raise ConfigError("block size must be positive")
    return int(block_bytes)


def tile_rows(ng: int) -> int:
    """Query rows of every BLAS product: a power of two in [64, 1024] with
    ``rows * ng * 4 <= TILE_BYTES`` where possible.

    Large products amortise BLAS's packing of the gallery (a 64-row product
    costs about twice as much per element as a 512-row one); the size depends
    on the gallery size only, never on the block size, so that results do not
    either (see ``inner_products``).
    """
    rows = TILE_BYTES // (4 * max(ng, 1))
    return int(min(1024, max(64, 2 ** int(math.floor(math.log2(max(rows, 1)))))))


def inner_products(xq, s, e, xgT, S, pad_q) -> None:
    """``S[:e-s] = xq[s:e] @ xgT``, always as products of exactly ``tile`` rows.

    BLAS may round differently for differently shaped products (a one-row
    product is a matrix-vector call, for one); using one shape for every
    call makes each inner product, hence every result, independent of the
    block size and of how the work is split into chunks.
    """
    tile = pad_q.shape[0]
    for t in range(s, e, tile):
        u = min(e, t + tile)
        if u - t == tile:
            np.matmul(xq[t:u], xgT, out=S[t - s:u - s])
        else:
            pad_q[:u - t] = xq[t:u]
            pad_q[u - t:] = 0
            np.matmul(pad_q, xgT, out=S[t - s:t - s + tile])


def explicit_range(spec: GridSpec) -> tuple[float, float] | None:
    """``--calibration-range LO:HI``, checked; None for a FAR-defined range."""
    if spec.calibration_range is None:
        return None
    lo, hi = (float(v) for v in spec.calibration_range)
    check_range(lo, hi, "--calibration-range", f"{lo:g}:{hi:g}")
    return lo, hi


def far_fractions(spec: GridSpec) -> tuple[float, float]:
    """``--far-range A:B``, checked: ``0 < A < B <= 1``."""
    a, b = (float(v) for v in spec.far_range)
    if not (0.0 < a < b <= 1.0):
        raise ConfigError(f"--far-range {a:g}:{b:g} is degenerate: need 0 < A < B <= 1")
    return a, b


def query_positives(prep: Prepared) -> np.ndarray:
    """(nq,) int64: the positives of each query, ``R`` (its class's gallery
    rows less its own row)."""
    return ((prep.class_end - prep.class_start)[prep.q_class]
            - (prep.self_col >= 0)).astype(np.int64)


def drop_self(keys: np.ndarray, self_col: np.ndarray, first: int = 0) -> np.ndarray:
    """``keys`` (B, m) of B queries and gallery columns ``first...first+m-1``
    with each query's own column (``self_col``, -1: none) set to +inf."""
    mine = (self_col >= first) & (self_col < first + keys.shape[1])
    keys[np.nonzero(mine)[0], self_col[mine] - first] = np.inf
    return keys


def check_range(lo: float, hi: float, option: str, what: str) -> None:
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ConfigError(f"{option} {what}: bounds must be finite numbers")
    if not lo < hi:
        raise ConfigError(
            f"{option} {what} is degenerate: the lower threshold must be below the upper "
            f"(got {lo:.6g} and {hi:.6g}); widen the range")


# -- the key space ------------------------------------------------------------


def pair_keys(S: np.ndarray, qn2: np.ndarray, gn2: np.ndarray, l2: bool,
              aq: np.ndarray | None = None, bg: np.ndarray | None = None) -> np.ndarray:
    """Keys of the float32 inner products ``S`` (B, m) of B queries and m
    gallery rows, in float64: ``1 - s`` (cosine) or ``qn2 + gn2 - 2 s`` (l2,
    with the squared norms ``qn2`` (B,) and ``gn2`` (m,); ignored for cosine).
    With offsets ``aq`` (B,) and ``bg`` (m,) (a calibration, SPEC 11) the key
    is the adjusted distance ``d - aq - bg`` (``d = sqrt(max(key, 0))`` for l2).

    The same arithmetic, in the same order, as the kernels' ``_key`` and
    ``_offset_row``: a key computed here equals the engine's bit for bit.
    """
    s = S.astype(np.float64)
    if l2:
        k = (qn2[:, None] + gn2[None, :]) - 2.0 * s
    else:
        k = 1.0 - s
    if aq is None:
        return k
    if l2:
        k = np.sqrt(np.maximum(k, 0.0))
    return (k - aq[:, None]) - bg[None, :]


def key_span(prep: Prepared) -> tuple[float, float]:
    """``(lo, hi)``: every key of ``prep``'s pairs lies in it, up to rounding
    (cosine: [0, 2]; l2: [0, (max |q| + max |g|)^2]; with offsets, the
    distance span moved by the largest and smallest offsets)."""
    if prep.metric == "cosine":
        lo, hi = 0.0, 2.0
    else:
        top = math.sqrt(float(prep.qn2.max())) + math.sqrt(float(prep.gn2.max()))
        if prep.q_off is None:
            return 0.0, max(top * top, 1e-30)
        lo, hi = 0.0, max(top, 1e-15)
    if prep.q_off is None:
        return lo, hi
    return (lo - float(prep.q_off.max()) - float(prep.g_off.max()),
            hi - float(prep.q_off.min()) - float(prep.g_off.min()))


def key_to_dist(key, l2: bool):
    """The distance of a key (a float for a scalar, an array for an array):
    the key itself for cosine, ``sqrt(max(key, 0))`` for l2."""
    if np.ndim(key) == 0:
        if not l2:
            return float(key)
        if key == np.inf:
            return np.inf
        return math.sqrt(max(float(key), 0.0))
    return np.sqrt(np.maximum(key, 0.0)) if l2 else key


def dist_to_key(dist, l2: bool):
    """The key of a distance: itself for cosine, ``dist * dist`` for l2."""
    return dist * dist if l2 else dist


def report_edges(span: tuple[float, float], l2: bool) -> np.ndarray:
    """The REPORT_BINS + 1 distance edges of the report histogram, whose bins
    are even in key space over ``span`` (see :func:`key_span`)."""
    return np.asarray(key_to_dist(np.linspace(span[0], span[1], REPORT_BINS + 1), l2),
                      np.float64)


def report_scale(span: tuple[float, float]) -> float:
    """Bins per key unit of the report histogram over ``span``."""
    return REPORT_BINS / (span[1] - span[0])


def value_bins(values: np.ndarray, lo: float, scale: float, nbins: int) -> np.ndarray:
    """Bin of each value of an even histogram starting at ``lo`` with
    ``scale`` bins per unit: ``int((v - lo) * scale)`` clipped to
    ``[0, nbins - 1]`` (a non-finite product goes to bin 0), as the
    kernels' ``_bin``."""
    with np.errstate(invalid="ignore", over="ignore"):
        b = (values - lo) * scale
    b = np.where(np.isfinite(b), b, 0.0).astype(np.int64)
    return np.clip(b, 0, nbins - 1)


def rank_bin(hist: np.ndarray, rank: int, below: int = 0) -> tuple[int, int] | None:
    """Where the ``rank``-th smallest value (1-based) lies in a histogram.

    ``below`` values lie below the histogram's first bin. Returns ``(bin,
    rank within the bin)``, or None when the rank is not inside the
    histogram (``below < rank <= below + hist.sum()`` fails).
    """
    cum = below + np.cumsum(hist)
    if not below < rank <= cum[-1]:
        return None
    bb = int(np.searchsorted(cum, rank, side="left"))
    before = int(cum[bb - 1]) if bb > 0 else int(below)
    return bb, rank - before


# -- retrieval: one definition, in ranking.py (re-exported here) -------------------
from .ranking import hits_at_r, rank_order, retrieval_at_r  # noqa: E402,F401


# -- float64 re-decision (machine-independent results) ---------------------------
#
# The engines compute every inner product with float32 BLAS, whose rounding
# depends on the CPU's kernel (OPENBLAS_CORETYPE), on the shape of the call
# and on the position of a row in it. No decision rests on that rounding:
# wherever a float32 key lies within the bound ``key_margins`` of a decision
# boundary (a threshold, a histogram edge, an order statistic's bracket,
# another candidate of a retrieval ranking), the pair is decided by
# ``exact_keys`` instead, a float64 key computed from the same float32 rows
# in one fixed order on every machine.
#
# The bound. For float32 rows x, y of dimension D, any order of summation
# (blocked, vectorised, with or without FMA) gives a float32 inner product
# within gamma32(D) * sum_k |x_k y_k| <= gamma32(D) |x| |y| of the exact one
# (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., 3.1:
# gamma(n) = n u / (1 - n u), u = 2**-24 in float32, 2**-53 in float64),
# and |x| |y| bounds sum_k |x_k y_k| (Cauchy-Schwarz). The float64 key sums
# exact products of float32 numbers (48 significant bits) in a fixed order:
# within gamma64(D) |x| |y|. The key formulas add a few float64 roundings.

#: benchmarks only (see key_margins): decide with float32 keys
_FLOAT32_DECISIONS = os.environ.get("_OPIS_BENCH_FLOAT32_DECISIONS") == "1"

U32 = 2.0 ** -24
U64 = 2.0 ** -53


def _gamma(n: int, u: float) -> float:
    return n * u / (1.0 - n * u)


def key_margins(prep: Prepared, q: np.ndarray | None = None) -> np.ndarray:
    """A bound, per query row ``q`` (all rows when None), on ``|float32-BLAS
    key - exact_keys|`` for every gallery column of ``prep``.

    * cosine: rows are L2-normalised in float64 and rounded to float32, so
      ``|x| <= 1 + 2**-23``; ``M = (gamma32(D) + gamma64(D)) |x| |y| + 2**-50``
      (the two ``1 - s`` roundings);
    * l2 (squared keys ``|q|^2 + |g|^2 - 2 s`` against the float64 sum of
      ``(x_k - y_k)^2``): ``M = 2 gamma32(D) |x| |y|`` plus float64 terms
      ``gamma64(D + 4) (2 (|x| + |y|)^2 + |x|^2 + |y|^2)``;
    * with offsets (a calibration), the key is ``d - a - b``: for l2 ``d`` is a
      square root, and ``|sqrt(s) - sqrt(t)| <= sqrt(|s - t|)`` turns the
      bound of the squared keys into one of the distances (wide: calibrated
      l2 re-decides more pairs); both add the roundings of the two
      subtractions.

    ``|y|`` is the largest gallery norm, so the bound holds for every column.

    The private environment variable ``_OPIS_BENCH_FLOAT32_DECISIONS=1``
    (read by ``benchmarks/bench_redecide.py`` only, never documented for
    users) makes every margin 0: float32 keys then decide, and the results
    are no longer machine-independent. It exists so that the cost of the
    float64 decisions can be measured against the same tree.
    """
    q = np.arange(len(prep.q_rows)) if q is None else np.asarray(q, np.int64)
    if _FLOAT32_DECISIONS:
        return np.zeros(len(q))
    D = int(prep.xq.shape[1])
    g32 = _gamma(D, U32)
    g64 = _gamma(D + 4, U64)
    if prep.metric == "cosine":
        nx = np.full(len(q), 1.0 + 2.0 ** -23)
        ny = 1.0 + 2.0 ** -23
    else:
        nx = np.sqrt(prep.qn2[q]) * (1 + 1e-12)
        ny = math.sqrt(float(prep.gn2.max())) * (1 + 1e-12) if len(prep.gn2) else 0.0
    if prep.metric == "cosine":
        m = (g32 + g64) * nx * ny + 2.0 ** -50
    else:
        m = 2 * g32 * nx * ny + g64 * (2 * (nx + ny) ** 2 + nx * nx + ny * ny) \
            + 4 * U64 * (nx + ny) ** 2 + 1e-300
    if prep.q_off is None:
        return m
    if prep.metric == "l2":
        m = np.sqrt(m) + 4 * U64 * (nx + ny)
    a = np.abs(prep.q_off[q])
    b = float(np.abs(prep.g_off).max()) if len(prep.g_off) else 0.0
    return m + 8 * U64 * (2.0 + (nx + ny) + a + b)


def bracket_bins(margin: float, scale: float) -> int:
    """Bins ``s`` around a float32 key's bin that hold its float64 key with room.

    The one rule by which an order statistic or a count is decided in
    float64 from a histogram of float32 keys (even bins, ``scale`` bins per
    key unit, ``margin`` >= every ``|float32 key - float64 key|``, see
    :func:`key_margins`). If the ``r``-th smallest float32 key lies in bin
    ``c``, the ``r``-th smallest float64 key ``t`` lies within ``margin`` of
    it; a pair whose float32 key lies in a bin below ``c - s`` has a float64
    key below ``t``, one in a bin above ``c + s`` a float64 key above ``t``.
    So the float64 keys of the pairs in bins ``[c - s, c + s]`` (the
    *bracket*) and the number of pairs below it decide ``t`` and every count
    at ``t`` exactly (:func:`select_in_bracket`); the same holds for any
    threshold ``t`` whose float64 key lies in bin ``c`` itself. ``s`` is
    ``ceil(2 margin scale) + 1``: the extra bin covers the rounding of the bin
    arithmetic (``int((key - lo) * scale)``).
    """
    return int(math.ceil(2.0 * float(margin) * float(scale))) + 1


def select_in_bracket(keys64: np.ndarray, rank: int, below: int) -> float:
    """The ``rank``-th smallest float64 key (1-based), from the float64 keys
    ``keys64`` of every pair of its bracket (:func:`bracket_bins`) and the
    number ``below`` of pairs in the bins below the bracket."""
    r = int(rank) - int(below)
    if not 0 < r <= len(keys64):  # pragma: no cover - the bracket holds it (bracket_bins)
        raise RuntimeError("order statistic not among the gathered keys; please report this")
    return float(np.partition(np.asarray(keys64, np.float64), r - 1)[r - 1])


def class_pair_keys(prep: Prepared, s: int, e: int, block_bytes: int):
    """The float64 keys (:func:`exact_keys`) of every within-class pair of
    the query rows ``[s, e)``, in pieces of about ``block_bytes / 40`` pairs:
    yields ``(a, b, ps, pe, keys)``, ``keys`` (b - a, pe - ps) of the query
    rows ``[a, b)`` (one class) and the gallery columns ``[ps, pe)`` of
    their class, a query's own pair +inf (:func:`drop_self`)."""
    if e <= s:
        return
    cls = prep.q_class[s:e]
    starts = s + np.flatnonzero(np.r_[True, cls[1:] != cls[:-1]])
    for q0, q1 in zip(starts.tolist(), [*starts[1:].tolist(), e]):
        ps, pe = int(prep.class_start[cls[q0 - s]]), int(prep.class_end[cls[q0 - s]])
        if pe <= ps:
            continue
        step = max(1, block_bytes // (40 * (pe - ps)))
        for a in range(q0, q1, step):
            b = min(q1, a + step)
            k = exact_keys(prep, np.repeat(np.arange(a, b), pe - ps),
                           np.tile(np.arange(ps, pe), b - a)).reshape(b - a, pe - ps)
            yield a, b, ps, pe, drop_self(k, prep.self_col[a:b], ps)


def exact_keys(prep: Prepared, q: np.ndarray, g: np.ndarray) -> np.ndarray:
    """The float64 keys of the pairs (query row ``q[i]``, gallery column
    ``g[i]``), in the kernels' key space (see the module docstring; adjusted
    distances with offsets).

    Computed from the float32 rows in float64, products exact, summed in one
    fixed order (``_kernels.exact_key``): the same bits on every machine, for
    a pair and its mirror, whatever the BLAS. Every decision of the engines
    that a float32 key cannot make with certainty is made with these keys.
    """
    from . import _kernels

    q = np.ascontiguousarray(q, np.int64)
    g = np.ascontiguousarray(g, np.int64)
    off = prep.q_off is not None
    aq = prep.q_off if off else np.zeros(1)
    bg = prep.g_off if off else np.zeros(1)
    return _kernels.exact_keys(prep.xq, prep.xg, q, g, prep.metric == "l2", off, aq, bg)


def nearest_exact(prep: Prepared, q: int, row: np.ndarray, L: int, margin: float) -> np.ndarray:
    """The ``L`` nearest gallery columns of query row ``q`` by (float64 key,
    original row) (``ranking.rank_order``; SPEC 2), from ``row``: its keys of
    float32 products (own column +inf), each within ``margin`` of its
    float64 key (:func:`key_margins`). A column of the float64 top L has a
    float32 key within two margins of the float32 L-th smallest: those
    columns are ranked by their float64 keys (:func:`exact_keys`)."""
    kth = np.partition(row, L - 1)[L - 1]
    cand = np.flatnonzero(row <= kth + 2 * margin)
    k64 = exact_keys(prep, np.full(len(cand), q, np.int64), cand)
    k64[cand == prep.self_col[q]] = np.inf
    return cand[rank_order(k64, prep.g_rows[cand])[:L]]
