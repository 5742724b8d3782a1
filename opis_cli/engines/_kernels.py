"""Compiled per-block kernels of the exact engine (the only numba import).

Every kernel works on one block ``S`` of inner products between a block of
queries and the whole gallery, as produced by a BLAS matrix product, and turns
them into a *key* that is monotone in the distance:

* cosine: ``key = d = 1 - <q, g>`` (rows already L2-normalised);
* l2: ``key = d**2 = |q|^2 + |g|^2 - 2 <q, g>`` (squared distance).

Keys are computed in float64 from the float32 products so that comparisons
with the float64 threshold grid are made once, in one precision. A key
within its row's margin (``base.key_margins``) of a decision boundary is
recomputed by ``exact_key`` (float64 sums of the float32 rows in one fixed
order, vectorised by ``_make_sum16``) and decided by that, so that results
do not depend on the BLAS kernel that rounded the products.

Gallery columns are sorted by (class, original row), so the positives of a
query are the contiguous slice ``[ps, pe)``; ``self_col`` is the column of the
query's own row (or -1), never paired with it (SPEC 3).

The kernels are serial and release the GIL: the engine runs one per worker
thread, each on its own tile, with its own slot ``t`` of the histograms.
The entry points (``process_block``, ``process_strip``) take their inputs
and outputs as a few named tuples defined here (``Rows``, ``Windows``,
``Report``, ``Gather``, ``GridCounts``, ``Ranking``, ``StripRows``), which
they unpack into locals; the inner helpers take plain arguments. The key
formula has a numpy twin in ``base.pair_keys`` and AP@R in
``base.retrieval_at_r`` (tests/test_engines_base.py holds them equal).
Most of their time goes to scanning keys for the few below a range of
interest; on CPUs with AVX-512 that compaction is eight keys at a time
(``_compress8``), elsewhere a portable branch-free loop.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from .._numba_cache import use_user_cache_if_read_only

use_user_cache_if_read_only()  # before numba reads NUMBA_CACHE_DIR (a read-only install)

import numba as nb  # noqa: E402
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ._jit import kernel, locked  # numba.njit(cache=True, nogil=True), one compile per types


#: interleaved copies of a histogram (a power of two), see _order_stat_row
SPILL = 16
#: interleaved copies of the per-row grid counts, see _counts_row
COPIES = 4
#: keys per chunk of the retrieval scan, see _heap_offer
RET_CHUNK = 64
#: columns of a row processed together (their float64 keys: 16 KiB, in L1)
COLS = 2048


# -- the kernels' arguments ---------------------------------------------------
# Named tuples of arrays and scalars: numba passes them as flat arguments (no
# runtime cost), and the kernels unpack them into the locals they always used.
# Arrays whose first axis is the block row are named "(B, ...)"; histograms
# whose first axis is the worker slot "(slots, ...)".


class Rows(NamedTuple):
    """The queries of one block (B rows) and the gallery (ng columns)."""

    l2: bool                 # keys are squared l2 distances (else cosine)
    qn2: np.ndarray          # (B,) float64 squared norms of the queries
    gn2: np.ndarray          # (ng,) float64 squared norms of the gallery
    self_col: np.ndarray     # (B,) int64 column of the query's own row, or -1
    pos_start: np.ndarray    # (B,) int64: the query's positives are the
    pos_end: np.ndarray      # (B,) int64  columns [pos_start, pos_end)
    row_eval: np.ndarray     # (B,) bool, the query's class is evaluated
    row_sample: np.ndarray   # (B,) bool, the row feeds the report histogram
    g_orig: np.ndarray       # (ng,) int64 original row of each gallery column
    off: bool                # offsets (a calibration): keys are d - aq - bg
    aq: np.ndarray           # (B,) float64 query offsets (unused without off)
    bg: np.ndarray           # (ng,) float64 gallery offsets


class StripRows(NamedTuple):
    """The queries of one strip of the upper triangle (see process_strip),
    over the columns of ``tiles.Layout``."""

    l2: bool
    qn2: np.ndarray          # (B,)
    n2: np.ndarray           # (ng,) squared norm of each column
    qs: np.ndarray           # (B,) a row's positives are the columns
    qe: np.ndarray           # (B,)  [qs, qe) among the queries
    gs: np.ndarray           # (B,)  and [gs, ge) among the others
    ge: np.ndarray           # (B,)
    row_eval: np.ndarray     # (B,)
    col_lim: np.ndarray      # (nq,) float64 window top of an evaluated query, else -inf
    all_eval: bool           # every row is evaluated
    off: bool                # offsets, as in Rows (a query's aq == its column's bg)
    aq: np.ndarray           # (B,)
    bg: np.ndarray           # (ng,) offset of each column


class Windows(NamedTuple):
    """Order statistic: per window w, count negatives with key < lo[w] and
    histogram those in [lo[w], hi[w]) into F bins."""

    on: bool
    lo: np.ndarray           # (W,) float64
    hi: np.ndarray           # (W,) float64
    scale: np.ndarray        # (W,) float64 bins per key unit
    F: int                   # bins per window
    below: np.ndarray        # (slots, W) int64
    hist: np.ndarray         # (slots, W, F + SPILL) int64 (or (slots, W, 1) when off)


class Report(NamedTuple):
    """Coarse histogram of all keys of the sampled rows, for the report."""

    on: bool
    lo: float
    scale: float             # bins per key unit
    bins: int
    pos: np.ndarray          # (slots, bins) int64
    neg: np.ndarray          # (slots, bins) int64


class Gather(NamedTuple):
    """Gather the negative keys in the brackets ``[lo[i], hi[i])`` (i = 0, 1)
    of the two order statistics, decided in float64 (see _gather_row)."""

    on: bool
    lo: np.ndarray           # (2,) float64
    hi: np.ndarray           # (2,) float64
    val: np.ndarray          # (B, capacity) float64
    n: np.ndarray            # (B,) int64 true numbers (may exceed the capacity)
    below: np.ndarray        # (B, 2) int64 keys below each bracket


class GridCounts(NamedTuple):
    """Per-row threshold counts with (possibly uncertain) key bounds
    ``lo_b[k] <= t_k <= hi_b[k]`` of the grid; ``base``/``inv_step`` the
    even grid that guesses a key's cell, ``cert_lo`` its certain lower
    bounds (see _counts_row)."""

    on: bool
    lo_b: np.ndarray         # (K,) float64
    hi_b: np.ndarray         # (K,) float64
    cert_lo: np.ndarray      # (K,) float64
    base: float
    inv_step: float
    all: np.ndarray          # (B, K) int64 pairs per cell
    pos: np.ndarray          # (B, K) int64 positive pairs per cell
    def_val: np.ndarray      # (B, capacity) float64 deferred keys
    def_pos: np.ndarray      # (B, capacity) bool, a deferred key is a positive
    def_col: np.ndarray      # (B, capacity) int64 gallery column of a deferred key
    def_n: np.ndarray        # (B,) int64 true numbers (may exceed the capacity)


class Ranking(NamedTuple):
    """Retrieval: rank of the first positive, AP@R and the positives among
    the R nearest (R-Precision's numerator) of every row."""

    on: bool
    first_rank: np.ndarray   # (B,) int64
    ap: np.ndarray           # (B,) float64
    n_rel: np.ndarray        # (B,) int64
    hits: np.ndarray         # (B,) int64 positives among the R nearest


class Exact(NamedTuple):
    """The float64 re-decision (``base.exact_keys``, ``base.key_margins``):
    the block's query rows, the gallery rows, and each query's bound on
    ``|float32 key - float64 key|``. A key within it of a decision boundary
    is recomputed by ``exact_key`` and decided with that."""

    xq: np.ndarray           # (B, D) float32
    xg: np.ndarray           # (ng, D) float32
    margin: np.ndarray       # (B,) float64


class Verify(NamedTuple):
    """Verification view (SPEC 14): histograms of every key (``hist``) or the
    keys of the wanted bins (``gather``), for the evaluated rows (global
    scope) and, with groups, for each row's group (group scope)."""

    hist: bool
    gather: bool
    lo: float                # key of the first bin's lower edge (both scopes)
    scale: float             # bins per key unit, global scope
    bins: int
    gscale: float            # bins per key unit, group scope
    gbins: int
    pos: np.ndarray          # (slots, bins) int64 positive keys per bin
    neg: np.ndarray          # (slots, bins) int64 negative keys per bin
    gpos: np.ndarray         # (slots, G, gbins) int64 (or (slots, 1, 1) without groups)
    gneg: np.ndarray         # (slots, G, gbins) int64
    row_grp: np.ndarray      # (B,) int64 group of each row, -1 without groups
    want: np.ndarray         # (bins,) bool global bins to gather
    gwant: np.ndarray        # (G, gbins) bool group bins to gather (or (1, 1))
    g_lo: float              # every wanted key lies in [g_lo, g_hi]
    g_hi: float
    val: np.ndarray          # (B, capacity) float64 gathered keys
    isp: np.ndarray          # (B, capacity) bool, a gathered key is a positive
    n: np.ndarray            # (B,) int64 true numbers (may exceed the capacity)


def num_threads() -> int:
    """Number of worker threads numba will use."""
    return nb.get_num_threads()


@kernel
def _key(s, qn2, gn2, l2):
    """The key of one inner product ``s`` (float32), exactly as _keys_row."""
    if l2:
        return qn2 + gn2 - 2.0 * np.float64(s)
    return 1.0 - np.float64(s)


@kernel
def _bin(key, lo, scale, nbins):
    b = int((key - lo) * scale)
    if b < 0:
        return 0
    if b >= nbins:
        return nbins - 1
    return b


@kernel
def _before(k1, o1, k2, o2):
    """(k1, o1) ranks before (k2, o2): by key, ties by original row."""
    return k1 < k2 or (k1 == k2 and o1 < o2)


@kernel
def _sift_down(hk, ho, hp, hc, h0, n, i):
    """Restore the max-heap (by key, then row) of ``n`` items at ``h0`` of
    the arrays below its position ``i``."""
    while True:
        left = 2 * i + 1
        if left >= n:
            return
        big = left
        if left + 1 < n and _before(hk[h0 + left], ho[h0 + left], hk[h0 + left + 1],
                                    ho[h0 + left + 1]):
            big = left + 1
        if not _before(hk[h0 + i], ho[h0 + i], hk[h0 + big], ho[h0 + big]):
            return
        _swap(hk, ho, hp, hc, h0 + i, h0 + big)
        i = big


@kernel
def _sift_up(hk, ho, hp, hc, h0, i):
    """Restore the max-heap at ``h0`` of the arrays above its position ``i``."""
    while i > 0:
        parent = (i - 1) // 2
        if not _before(hk[h0 + parent], ho[h0 + parent], hk[h0 + i], ho[h0 + i]):
            return
        _swap(hk, ho, hp, hc, h0 + parent, h0 + i)
        i = parent


@kernel
def _swap(hk, ho, hp, hc, a, z):
    """Swap heap items ``a`` and ``z`` (key, original row, relevant, column)."""
    hk[a], hk[z] = hk[z], hk[a]
    ho[a], ho[z] = ho[z], ho[a]
    hp[a], hp[z] = hp[z], hp[a]
    hc[a], hc[z] = hc[z], hc[a]


@kernel
def _guess(key, l2, K, base, inv_step):
    """Cell of ``key`` on the even grid ``base + k / inv_step`` of distances
    (keys of l2 are squared distances), clipped to [0, K-1]; usually exact."""
    d = np.sqrt(max(key, 0.0)) if l2 else key
    return int(np.ceil(min(max((d - base) * inv_step, 0.0), K - 1.0)))


@kernel
def _cell(key, K, lo_b, hi_b, l2, base, inv_step):
    """Grid cell of ``key`` (first k with t_k >= key), or -1 if undecided.

    ``lo_b[k] <= t_k <= hi_b[k]``; the caller has checked ``key <= hi_b[-1]``.
    """
    if key <= lo_b[0]:
        return 0
    k = _guess(key, l2, K, base, inv_step)
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


_D4 = ir.VectorType(ir.DoubleType(), 4)
_F4 = ir.VectorType(ir.FloatType(), 4)
#: running sums of the float64 inner products (four vectors of four lanes)
SUMS = 16


def _make_sum16(squares: bool):
    """An intrinsic ``f(x, y) -> float64`` for two float32 C-contiguous 1-D
    arrays of one length ``n``: over ``k < n - n % 16``, ``x[k] * y[k]`` (or
    ``(x[k] - y[k])**2`` when ``squares``) in float64, running sum ``j``
    taking the terms ``k = j (mod 16)`` in increasing ``k``; the 16 sums are
    then added pairwise: ``((s0 + s1) + (s2 + s3)) + ...``.

    That order is part of the definition, not an optimisation: the IR's
    vector operations are IEEE operations lane by lane, so every x86-64 CPU
    (SSE2, AVX2 or AVX-512) gives the same bits; ``_sum16_ref`` is the
    same arithmetic in plain numba (tests hold them equal). No fusion into
    FMA happens (the IR carries no ``contract`` flag), and for products it
    would not matter: the product of two float32 numbers is exact in float64.
    """

    @intrinsic
    def sum16(typingctx, x, y):
        if not (_contiguous(x, y) and x.dtype == types.float32 and y.dtype == types.float32
                and x.ndim == 1 and y.ndim == 1):
            return None
        sig = types.float64(x, y)

        def codegen(context, builder, signature, args):
            xa = context.make_array(signature.args[0])(context, builder, args[0])
            ya = context.make_array(signature.args[1])(context, builder, args[1])
            i64 = ir.IntType(64)
            n = builder.extract_value(xa.shape, 0)
            n16 = builder.sub(n, builder.srem(n, ir.Constant(i64, SUMS)))
            zero = ir.Constant(_D4, [0.0] * 4)
            accs = [cgutils.alloca_once_value(builder, zero) for _ in range(SUMS // 4)]
            with cgutils.for_range_slice(builder, ir.Constant(i64, 0), n16,
                                         ir.Constant(i64, SUMS)) as (k, _):
                for v in range(SUMS // 4):
                    kk = builder.add(k, ir.Constant(i64, 4 * v))
                    px = builder.bitcast(builder.gep(xa.data, [kk]), _F4.as_pointer())
                    py = builder.bitcast(builder.gep(ya.data, [kk]), _F4.as_pointer())
                    vx = builder.fpext(builder.load(px, align=4), _D4)
                    vy = builder.fpext(builder.load(py, align=4), _D4)
                    if squares:
                        d = builder.fsub(vx, vy)
                        term = builder.fmul(d, d)
                    else:
                        term = builder.fmul(vx, vy)
                    builder.store(builder.fadd(builder.load(accs[v]), term), accs[v])
            sums = []
            for v in range(SUMS // 4):
                acc = builder.load(accs[v])
                sums += [builder.extract_element(acc, ir.Constant(ir.IntType(32), lane))
                         for lane in range(4)]
            while len(sums) > 1:
                sums = [builder.fadd(sums[i], sums[i + 1]) for i in range(0, len(sums), 2)]
            return sums[0]

        return sig, codegen

    return sum16


@intrinsic
def _prefetch(typingctx, arr, index):
    """Hint the CPU to bring the cache line of ``arr.flat[index]`` (a C
    array) into the cache (``llvm.prefetch``; no effect on results)."""
    if not _contiguous(arr):
        return None
    sig = types.void(arr, types.int64)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = builder.bitcast(builder.gep(ary.data, [args[1]]), ir.IntType(8).as_pointer())
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer(),
                                                            ir.IntType(32), ir.IntType(32),
                                                            ir.IntType(32)]),
            "llvm.prefetch.p0i8")
        builder.call(fn, [ptr, ir.Constant(ir.IntType(32), 0), ir.Constant(ir.IntType(32), 3),
                          ir.Constant(ir.IntType(32), 1)])
        return context.get_dummy_value()

    return sig, codegen


@kernel
def _prefetch_row(xg, j):
    """Prefetch gallery row ``j`` (every cache line of it)."""
    D = xg.shape[1]
    base_ = j * D
    for k in range(0, D, 16):
        _prefetch(xg, base_ + k)


_dot16 = _make_sum16(False)
_sqdiff16 = _make_sum16(True)


@kernel
def _sum16_ref(x, y, squares):
    """The arithmetic of ``_make_sum16`` in plain numba (for tests)."""
    n16 = x.shape[0] - x.shape[0] % SUMS
    acc = np.zeros(SUMS)
    for k in range(n16):
        if squares:
            d = np.float64(x[k]) - np.float64(y[k])
            acc[k % SUMS] += d * d
        else:
            acc[k % SUMS] += np.float64(x[k]) * np.float64(y[k])
    w = SUMS
    while w > 1:
        for i in range(w // 2):
            acc[i] = acc[2 * i] + acc[2 * i + 1]
        w //= 2
    return acc[0]


@kernel
def exact_key(xr, xg, j, l2, off, a, b):
    """The float64 key of query row ``xr`` (float32) and gallery row ``xg[j]``
    (``base.exact_keys``): products (cosine) or squared differences (l2) of
    float32 numbers in float64, in the fixed order of ``_make_sum16`` and
    then the ``n % 16`` last terms in order, so that every machine computes
    the same bits, and a pair and its mirror the same value (products
    commute; ``x - y == -(y - x)``)."""
    y = xg[j]
    D = xr.shape[0]
    if l2:
        s = _sqdiff16(xr, y)
        for k in range(D - D % SUMS, D):
            d = np.float64(xr[k]) - np.float64(y[k])
            s += d * d
        if off:
            return (np.sqrt(max(s, 0.0)) - a) - b
        return s
    s = _dot16(xr, y)
    for k in range(D - D % SUMS, D):
        s += np.float64(xr[k]) * np.float64(y[k])
    key = 1.0 - s
    if off:
        key = (key - a) - b
    return key


@kernel
def exact_keys(xq, xg, q, g, l2, off, aq, bg):
    """``exact_key`` of the pairs ``(q[i], g[i])`` (offsets ``aq[q]``, ``bg[g]``);
    fastest with the pairs sorted by gallery row."""
    out = np.empty(q.shape[0], np.float64)
    n = q.shape[0]
    for i in range(n):
        if i + 4 < n:
            _prefetch_row(xg, g[i + 4])
            _prefetch_row(xq, q[i + 4])
        a = aq[q[i]] if off else 0.0
        b = bg[g[i]] if off else 0.0
        out[i] = exact_key(xq[q[i]], xg, g[i], l2, off, a, b)
    return out


@kernel
def _keys_row(row, l2, qn, gn2, kb):
    if l2:
        for j in range(row.shape[0]):
            kb[j] = _key(row[j], qn, gn2[j], True)
    else:
        for j in range(row.shape[0]):
            kb[j] = _key(row[j], qn, 0.0, False)


@kernel
def _offset_row(kb, l2, aq, bg):
    """Raw keys -> adjusted distances ``d - aq - bg[j]`` (a calibration,
    SPEC 11; ``d = sqrt(max(key, 0))`` for l2), in place, in the order of
    ``base.pair_keys``."""
    if l2:
        for j in range(kb.shape[0]):
            kb[j] = (np.sqrt(max(kb[j], 0.0)) - aq) - bg[j]
    else:
        for j in range(kb.shape[0]):
            kb[j] = (kb[j] - aq) - bg[j]


def _host_has_avx512() -> bool:
    try:
        from llvmlite import binding
        return "+avx512f" in binding.get_host_cpu_features().flatten().split(",")
    except Exception:  # pragma: no cover - an llvmlite without the query
        return False


#: AVX-512 is available: compaction uses its compress instruction
#: (``OPIS_NO_AVX512=1`` in the environment forces the portable code, for tests;
#: numba's on-disk cache does not see the switch: use a fresh NUMBA_CACHE_DIR)
AVX512 = _host_has_avx512() and not os.environ.get("OPIS_NO_AVX512")


_V8 = ir.VectorType(ir.DoubleType(), 8)


def _lanes(context, builder, array_type, array, index):
    """Pointer to the 8 float64 lanes ``array[index:index + 8]``."""
    ary = context.make_array(array_type)(context, builder, array)
    return builder.bitcast(builder.gep(ary.data, [index]), _V8.as_pointer())


def _emit_compress(builder, v, mask, dptr):
    """Store the lanes of ``v`` where ``mask`` packed at ``dptr`` (all 8 lanes
    are written); return their number as int64."""
    compress = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(_V8, [_V8, _V8, ir.VectorType(ir.IntType(1), 8)]),
        "llvm.x86.avx512.mask.compress.v8f64")
    builder.store(builder.call(compress, [v, v, mask]), dptr, align=8)
    popcount = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.IntType(8), [ir.IntType(8)]), "llvm.ctpop.i8")
    count = builder.call(popcount, [builder.bitcast(mask, ir.IntType(8))])
    return builder.zext(count, ir.IntType(64))


def _contiguous(*arrays) -> bool:
    return all(isinstance(a, types.Array) and a.layout == "C" for a in arrays)


@intrinsic
def _compress8(typingctx, src, si, limit, dst, di):
    """Write the keys ``src[si:si+8] <= limit`` packed to ``dst[di:]`` (all 8
    lanes are stored: dst needs 8 spare slots); returns their number.

    AVX-512 ``vcompresspd`` into a register, then one full store (the
    compress-to-memory form is microcoded and slow on some CPUs). Only
    compiled where the CPU has AVX-512 (see ``AVX512``).
    """
    if not _contiguous(src, dst):
        return None
    sig = types.int64(src, types.int64, types.float64, dst, types.int64)

    def codegen(context, builder, signature, args):
        a_src, a_si, a_lim, a_dst, a_di = args
        v = builder.load(_lanes(context, builder, signature.args[0], a_src, a_si), align=8)
        lim = ir.Constant(_V8, ir.Undefined)
        for i in range(8):
            lim = builder.insert_element(lim, a_lim, ir.Constant(ir.IntType(32), i))
        dptr = _lanes(context, builder, signature.args[3], a_dst, a_di)
        return _emit_compress(builder, v, builder.fcmp_ordered("<=", v, lim), dptr)

    return sig, codegen


@intrinsic
def _compress8v(typingctx, src, si, lims, li, dst, di):
    """As _compress8 with one limit per key: ``src[si+k] <= lims[li+k]``."""
    if not _contiguous(src, lims, dst):
        return None
    sig = types.int64(src, types.int64, lims, types.int64, dst, types.int64)

    def codegen(context, builder, signature, args):
        a_src, a_si, a_lims, a_li, a_dst, a_di = args
        v = builder.load(_lanes(context, builder, signature.args[0], a_src, a_si), align=8)
        lim = builder.load(_lanes(context, builder, signature.args[2], a_lims, a_li), align=8)
        dptr = _lanes(context, builder, signature.args[4], a_dst, a_di)
        return _emit_compress(builder, v, builder.fcmp_ordered("<=", v, lim), dptr)

    return sig, codegen


_I8 = ir.VectorType(ir.IntType(64), 8)


def _compress_idx_codegen(each: bool):
    """Codegen of _compress8idx (one limit) and _compress8idxv (one per key)."""
    def codegen(context, builder, signature, args):
        a_src, a_si, a_lim, a_li, a_dst, a_di, a_idst, a_base = args
        v = builder.load(_lanes(context, builder, signature.args[0], a_src, a_si), align=8)
        cols = ir.Constant(_I8, ir.Undefined)
        lim = ir.Constant(_V8, ir.Undefined)
        first = builder.add(a_base, a_si)
        for i in range(8):
            at = ir.Constant(ir.IntType(32), i)
            cols = builder.insert_element(
                cols, builder.add(first, ir.Constant(ir.IntType(64), i)), at)
            if not each:
                lim = builder.insert_element(lim, a_lim, at)
        if each:
            lim = builder.load(_lanes(context, builder, signature.args[2], a_lim, a_li), align=8)
        mask = builder.fcmp_ordered("<=", v, lim)
        ary = context.make_array(signature.args[6])(context, builder, a_idst)
        iptr = builder.bitcast(builder.gep(ary.data, [a_di]), _I8.as_pointer())
        compress = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_I8, [_I8, _I8, ir.VectorType(ir.IntType(1), 8)]),
            "llvm.x86.avx512.mask.compress.v8i64")
        builder.store(builder.call(compress, [cols, cols, mask]), iptr, align=8)
        dptr = _lanes(context, builder, signature.args[4], a_dst, a_di)
        return _emit_compress(builder, v, mask, dptr)
    return codegen


@intrinsic
def _compress8idx(typingctx, src, si, limit, li, dst, di, idst, base):
    """As _compress8, also writing the kept keys' columns ``base + si + k``
    packed to ``idst[di:]`` (int64; 8 spare slots too); ``li`` is unused."""
    if not _contiguous(src, dst, idst) or idst.dtype != types.int64:
        return None
    sig = types.int64(src, types.int64, types.float64, types.int64, dst, types.int64, idst,
                      types.int64)
    return sig, _compress_idx_codegen(False)


@intrinsic
def _compress8idxv(typingctx, src, si, lims, li, dst, di, idst, base):
    """As _compress8idx with one limit per key: ``src[si+k] <= lims[li+k]``."""
    if not _contiguous(src, lims, dst, idst) or idst.dtype != types.int64:
        return None
    sig = types.int64(src, types.int64, lims, types.int64, dst, types.int64, idst, types.int64)
    return sig, _compress_idx_codegen(True)


# The compactions: append the keys at or below a limit (and, for the ``_idx``
# ones, their columns) to the output. The portable loops are branch-free
# (every key is written, the length advances by the test: with a branch, the
# mispredictions cost twice as much); where the CPU has AVX-512 they only
# finish what its compress leaves (fewer than eight keys), and the outputs
# need 8 spare slots.
@kernel
def _compact_loop(kb, j0, j1, limit, vals, n):
    for j in range(j0, j1):
        v = kb[j]
        vals[n] = v
        n += v <= limit
    return n


@kernel
def _compact_each_loop(kb, j0, j1, lims, vals, n):
    for j in range(j0, j1):
        v = kb[j]
        vals[n] = v
        n += v <= lims[j]
    return n


@kernel
def _compact_idx_loop(kb, j0, j1, limit, vals, idx, n, c0):
    for j in range(j0, j1):
        v = kb[j]
        vals[n] = v
        idx[n] = c0 + j
        n += v <= limit
    return n


@kernel
def _compact_idx_each_loop(kb, j0, j1, lims, vals, idx, n, c0):
    for j in range(j0, j1):
        v = kb[j]
        vals[n] = v
        idx[n] = c0 + j
        n += v <= lims[j]
    return n


if AVX512:
    @kernel
    def _compact(kb, j0, j1, limit, vals, n):
        """Append the keys ``kb[j] <= limit`` of ``j`` in [j0, j1) to
        ``vals[n:]``; returns the new length.

        Eight keys at a time with AVX-512 compress: 0.2 ns per key, against
        0.5-0.7 for the scalar loop and 1.5 with a branch (measured on rows
        of keys of which 10% are kept)."""
        j8 = j0 + (j1 - j0) // 8 * 8
        for j in range(j0, j8, 8):
            n += _compress8(kb, j, limit, vals, n)
        return _compact_loop(kb, j8, j1, limit, vals, n)

    @kernel
    def _compact_each(kb, j0, j1, lims, vals, n):
        """As _compact with one limit per key: ``kb[j] <= lims[j]``."""
        j8 = j0 + (j1 - j0) // 8 * 8
        for j in range(j0, j8, 8):
            n += _compress8v(kb, j, lims, j, vals, n)
        return _compact_each_loop(kb, j8, j1, lims, vals, n)

    @kernel
    def _compact_idx(kb, j0, j1, limit, vals, idx, n, c0):
        """As _compact, also writing each kept key's column ``c0 + j`` to
        ``idx`` (the float64 re-decision needs it).

        Eight keys and columns at a time with AVX-512 compress: 0.46 ns per
        key against 2.26 for the scalar loop (one row of 26,700 keys, 12%
        kept)."""
        j8 = j0 + (j1 - j0) // 8 * 8
        for j in range(j0, j8, 8):
            n += _compress8idx(kb, j, limit, 0, vals, n, idx, c0)
        return _compact_idx_loop(kb, j8, j1, limit, vals, idx, n, c0)

    @kernel
    def _compact_idx_each(kb, j0, j1, lims, vals, idx, n, c0):
        """As _compact_idx with one limit per key: ``kb[j] <= lims[j]``."""
        j8 = j0 + (j1 - j0) // 8 * 8
        for j in range(j0, j8, 8):
            n += _compress8idxv(kb, j, lims, j, vals, n, idx, c0)
        return _compact_idx_each_loop(kb, j8, j1, lims, vals, idx, n, c0)
else:
    _compact = _compact_loop
    _compact_each = _compact_each_loop
    _compact_idx = _compact_idx_loop
    _compact_idx_each = _compact_idx_each_loop


@kernel
def _order_stat_row(vals, n, weight, win_lo, win_hi, win_scale, F, below, hist):
    """Per window w: count keys < win_lo[w], histogram keys in [win_lo, win_hi),
    each key counted ``weight`` times.

    ``hist[w]`` has ``F + SPILL`` bins: a key outside the window is counted in
    one of the SPILL spill bins (by position), so every key costs one
    increment, no branch, and consecutive increments rarely hit one address
    (which would chain them through memory).
    """
    W = win_lo.shape[0]
    top = F - 1.0
    for w in range(W):
        lo = win_lo[w]
        hi = win_hi[w]
        sc = win_scale[w]
        h = hist[w]
        nb_ = 0
        for i in range(n):
            key = vals[i]
            nb_ += key < lo
            v = min(max((key - lo) * sc, 0.0), top)
            b = int(v)
            inside = (key >= lo) & (key < hi)
            h[b if inside else F + (i & (SPILL - 1))] += weight
        below[w] += weight * nb_


@kernel
def _report_hist(kb, sc, ps, pe, lo, scale, RB, hpos, hneg, xr, xg, c0, l2, off, a, bg, M):
    """The report histogram of one chunk (columns ``c0 + j``); a key within
    ``M`` of a bin edge is replaced by its float64 key (in ``kb``, so that
    the later phases see it too) and binned by it."""
    ms = M * scale
    for j in range(kb.shape[0]):
        if j == sc:
            continue
        key = kb[j]
        x = (key - lo) * scale
        fr = x - np.floor(x)
        if fr < ms or fr > 1.0 - ms:
            col = c0 + j
            key = exact_key(xr, xg, col, l2, off, a, bg[col])
            kb[j] = key
        b = _bin(key, lo, scale, RB)
        if ps <= j < pe:
            hpos[b] += 1
        else:
            hneg[b] += 1


@kernel
def _near_edges(kb, lo, scale, ms, idx):
    """The columns ``j`` whose key lies within ``ms / scale`` (its margin) of a
    bin edge of an even histogram (its float64 key may then lie in another
    bin), written to ``idx``; returns their number. Branch-free (every
    column is written, the length advances by the test), so the floors
    vectorise; the query's own key (+inf) gives NaN and is never near."""
    n = 0
    hi = 1.0 - ms
    for j in range(kb.shape[0]):
        x = (kb[j] - lo) * scale
        fr = x - np.floor(x)
        idx[n] = j
        n += (fr < ms) | (fr > hi)
    return n


@kernel
def _hist_keys(kb, j0, j1, sc, lo, scale, nbins, h):
    """Count the keys of columns [j0, j1) but ``sc`` into ``h`` by bin."""
    if j0 <= sc < j1:
        for j in range(j0, sc):
            h[_bin(kb[j], lo, scale, nbins)] += 1
        j0 = sc + 1
    for j in range(j0, j1):
        h[_bin(kb[j], lo, scale, nbins)] += 1


@kernel
def _verify_hist(kb, sc, a, b, ev, grp, lo, scale, nbins, gscale, gbins, hpos, hneg, gpos,
                 gneg, xr, xg, c0, l2, off, a_r, bg, M, idx):
    """Histogram every key of a chunk (columns ``c0 + j``; [a, b) are
    positives, the rest negatives; not the query's own column ``sc``), in the
    global histogram when the row is evaluated (``ev``) and in its group's
    (``grp >= 0``). The bins are those of the float64 keys: a key within the
    margin ``M`` of a bin edge is replaced by its float64 key (in ``kb``, so
    that the later phases see it too) and binned by it.

    Three loops: the keys near an edge (a vectorised test, ``_near_edges``;
    3% of them at D = 256 cosine), their float64 keys (the gallery rows
    prefetched a few keys ahead: most come from memory), then the histograms.
    The group bins' edges are global edges (``group_bins`` divides
    ``VER_BINS`` by a power of two, so the group scale is the global one
    divided by it exactly): for an evaluated row one test against the global
    edges, its slack the wider of the two scopes', finds every key near an
    edge of either. ``M == 0`` (float32 decisions, benchmarks only) keeps
    every float32 key."""
    m = kb.shape[0]
    if M > 0.0:
        if ev:
            sl = 1e-12 * (scale / gscale if grp >= 0 else 1.0)
            n = _near_edges(kb, lo, scale, M * scale * (1.0 + 1e-9) + sl, idx)
        else:
            n = _near_edges(kb, lo, gscale, M * gscale * (1.0 + 1e-9) + 1e-12, idx)
        for i in range(n):
            if i + 4 < n:
                _prefetch_row(xg, c0 + idx[i + 4])
            col = c0 + idx[i]
            kb[idx[i]] = exact_key(xr, xg, col, l2, off, a_r, bg[col])
    if ev:
        _hist_keys(kb, 0, a, sc, lo, scale, nbins, hneg)
        _hist_keys(kb, a, b, sc, lo, scale, nbins, hpos)
        _hist_keys(kb, b, m, sc, lo, scale, nbins, hneg)
    if grp >= 0:
        gp = gpos[grp]
        gn = gneg[grp]
        _hist_keys(kb, 0, a, sc, lo, gscale, gbins, gn)
        _hist_keys(kb, a, b, sc, lo, gscale, gbins, gp)
        _hist_keys(kb, b, m, sc, lo, gscale, gbins, gn)


@kernel
def _wanted(key, lo, scale, nbins, ms, want):
    """Whether a key's float64 key may lie in a wanted bin: its own bin is
    wanted, or it lies within its margin of an edge of a wanted neighbour."""
    b = _bin(key, lo, scale, nbins)
    if want[b]:
        return True
    x = (key - lo) * scale
    fr = x - np.floor(x)
    if fr < ms and b > 0 and want[b - 1]:
        return True
    return fr > 1.0 - ms and b < nbins - 1 and want[b + 1]


@kernel
def _verify_gather(kb, sc, a, b, ev, grp, lo, scale, nbins, want, gscale, gbins, gwant,
                   g_lo, g_hi, val, isp, n, xr, xg, c0, l2, off, a_r, bg, M, idx):
    """Append the float64 keys (``exact_key``) of a chunk whose float64 key
    lies in a wanted bin (of the global scope when the row is evaluated, of
    its group's scope) to ``val``/``isp`` (up to their capacity); returns the
    new true number. The bins are those of ``_verify_hist``.

    The columns whose float32 key may belong to a wanted bin are listed
    first (``idx``), then their float64 keys computed in column order with
    the gallery rows prefetched a few keys ahead. ``M == 0`` (float32
    decisions, benchmarks only) keeps the float32 keys, as ``_verify_hist``
    does."""
    m = kb.shape[0]
    lo_m = g_lo - M
    hi_m = g_hi + M
    hits = 0
    for j in range(m):  # vectorised: most chunks have no key near a wanted bin
        hits += (kb[j] >= lo_m) & (kb[j] <= hi_m)
    if hits == 0:
        return n
    cap = val.shape[0]
    ms = M * scale * (1.0 + 1e-9) + 1e-12
    gms = M * gscale * (1.0 + 1e-9) + 1e-12
    nc = 0
    for j in range(m):
        key = kb[j]
        if j == sc or not (lo_m <= key <= hi_m):
            continue
        if ((ev and _wanted(key, lo, scale, nbins, ms, want))
                or (grp >= 0 and _wanted(key, lo, gscale, gbins, gms, gwant[grp]))):
            idx[nc] = j
            nc += 1
    for i in range(nc):
        j = idx[i]
        col = c0 + j
        if M > 0.0:
            if i + 4 < nc:
                _prefetch_row(xg, c0 + idx[i + 4])
            k64 = exact_key(xr, xg, col, l2, off, a_r, bg[col])
        else:
            k64 = kb[j]
        take = ev and want[_bin(k64, lo, scale, nbins)]
        if not take and grp >= 0:
            take = gwant[grp, _bin(k64, lo, gscale, gbins)]
        if take:
            if n < cap:
                val[n] = k64
                isp[n] = a <= j < b
            n += 1
    return n


@kernel
def _fast_counts(vals, idx, n, K, lo_b, cert_lo, l2, base, inv_step, acc, M):
    """Count the keys whose guessed cell is certain, by more than the margin
    ``M``, into ``acc`` (interleaved copies); the others are moved, with
    their column, to the front of ``vals``/``idx``: returns their number. A
    function of its own: inlined into a larger loop body, LLVM compiles this
    loop about four times slower."""
    ns = 0
    for i in range(n):
        key = vals[i]
        k = _guess(key, l2, K, base, inv_step)
        if cert_lo[k] + M < key and key <= lo_b[k] - M:
            acc[i & (COPIES - 1), k] += 1
        else:
            vals[ns] = key
            idx[ns] = idx[i]
            ns += 1
    return ns


@kernel
def _gather_row(vals, idx, n, b_lo, b_hi, gval, gbelow, xr, xg, l2, off, a, bg, M):
    """The two order statistics' brackets ``[b_lo[g], b_hi[g])``, decided in
    float64: ``gbelow[g]`` is set to the number of keys whose float64 key
    lies below the bracket, and the float64 keys inside either bracket are
    written to ``gval`` (up to its capacity; a key in both once); returns
    their number. Only keys within ``M`` of a bracket are recomputed (and
    replaced in ``vals``); the others are certain from their float32 key.
    """
    lo0 = b_lo[0] - M
    lo1 = b_lo[1] - M
    hi0 = b_hi[0] + M
    hi1 = b_hi[1] + M
    c0 = 0
    c1 = 0
    hits = 0
    for i in range(n):
        key = vals[i]
        c0 += key < lo0
        c1 += key < lo1
        hits += ((lo0 <= key) & (key < hi0)) | ((lo1 <= key) & (key < hi1))
    gbelow[0] = c0
    gbelow[1] = c1
    if hits == 0:
        return 0
    cap_g = gval.shape[0]
    ng = 0
    for i in range(n):
        key = vals[i]
        in0 = (lo0 <= key) and (key < hi0)
        in1 = (lo1 <= key) and (key < hi1)
        if not (in0 or in1):
            continue
        col = idx[i]
        k = exact_key(xr, xg, col, l2, off, a, bg[col])
        vals[i] = k
        taken = False
        for g in range(2):
            if not (in0 if g == 0 else in1):
                continue
            if k < b_lo[g]:
                gbelow[g] += 1
            elif k < b_hi[g] and not taken:
                if ng < cap_g:
                    gval[ng] = k
                ng += 1
                taken = True
    return ng


@kernel
def _sure_cell(key, M, K, lo_b, hi_b, l2, base, inv_step):
    """The grid cell (K: above every threshold) that every key within ``M``
    of ``key`` falls in, or -1 when that is not certain.

    Its callers first test the guessed cell ``k`` (``_guess``): certain when
    ``hi_b[k-1] + M < key <= lo_b[k] - M``; not certain when ``lo_b[k] - M <
    key <= hi_b[k] + M`` (a float64 key within ``M`` may fall on either side
    of ``t_k``, whatever the guess's accuracy: deferring is always safe).
    Only the other keys (a guess off by a cell) come here."""
    c = _cell(key - M, K, lo_b, hi_b, l2, base, inv_step)
    if c >= 0 and c == _cell(key + M, K, lo_b, hi_b, l2, base, inv_step):
        return c
    return -1


@kernel
def _counts_row(pkeys, ps, vals, idx, n, key_skip, K, lo_b, hi_b, cert_lo, sq, base, inv_step,
                acc, call, cpos, dval, dpos, dcol, gather, b_lo, b_hi, gval, gbelow, xr, xg, l2,
                off, a, bg, M):
    """Grid cells of one row; returns (deferred, gathered) element counts.

    ``vals[:n]`` are the row's negative keys ``<= key_skip + M`` with their
    columns ``idx`` (both overwritten), ``pkeys`` the keys of its positives
    (columns ``ps + j``). A key is counted in a cell only when every key
    within the margin ``M`` of it falls in that cell: its float64 key does
    too. The cell is guessed from the even grid and accepted when certain
    (``cert_lo[k] + M < key <= lo_b[k] - M``, ``cert_lo[k] = hi_b[k-1]``),
    else looked up (``_sure_cell``). The keys that are still not certain
    (near a threshold, or in a part of the grid not yet known exactly) are
    deferred with their column: ``decide_deferred`` places them once the
    grid is exact, recomputing in float64 those within ``M`` of a threshold
    (after each tile with an exact grid, else after the pass). Negatives are counted into ``COPIES`` interleaved histograms
    (``acc``), summed at the end, so that consecutive keys in one cell do not
    chain their increments through memory.
    """
    for c in range(COPIES):
        for k in range(K):
            acc[c, k] = 0
    cap_d = dval.shape[0]
    nd = 0
    ng = 0
    if gather:
        ng = _gather_row(vals, idx, n, b_lo, b_hi, gval, gbelow, xr, xg, l2, off, a, bg, M)
    # the fast path; keys it cannot place are moved to the front of vals
    ns = _fast_counts(vals, idx, n, K, lo_b, cert_lo, sq, base, inv_step, acc, M)
    for i in range(ns):
        key = vals[i]
        k = _guess(key, sq, K, base, inv_step)
        if lo_b[k] - M < key and key <= hi_b[k] + M:
            c = -1  # in threshold k's zone (see _sure_cell)
        else:
            c = _sure_cell(key, M, K, lo_b, hi_b, sq, base, inv_step)
        if c >= 0:
            if c < K:
                acc[0, c] += 1
        else:
            if nd < cap_d:
                dval[nd] = key
                dpos[nd] = False
                dcol[nd] = idx[i]
            nd += 1
    for k in range(K):
        t = 0
        for c in range(COPIES):
            t += acc[c, k]
        call[k] = t
        cpos[k] = 0
    for j in range(pkeys.shape[0]):
        key = pkeys[j]
        if not key <= key_skip + M:
            continue
        k = _guess(key, sq, K, base, inv_step)
        if cert_lo[k] + M < key and key <= lo_b[k] - M:
            c = k
        elif lo_b[k] - M < key and key <= hi_b[k] + M:
            c = -1  # in threshold k's zone (see _sure_cell)
        else:
            c = _sure_cell(key, M, K, lo_b, hi_b, sq, base, inv_step)
        if c >= 0:
            if c < K:
                call[c] += 1
                cpos[c] += 1
        else:
            if nd < cap_d:
                dval[nd] = key
                dpos[nd] = True
                dcol[nd] = ps + j
            nd += 1
    return nd, ng


@kernel
def _side_push(sk, scol, ns, key, col, top):
    """Append (key, col) to the side list of near misses; when it is full,
    drop the entries above ``top`` (they can no longer matter) and grow it
    if that freed less than half."""
    if ns == sk.shape[0]:
        m = 0
        for i in range(ns):
            if sk[i] <= top:
                sk[m] = sk[i]
                scol[m] = scol[i]
                m += 1
        ns = m
        if 2 * ns > sk.shape[0]:
            nk = np.empty(2 * sk.shape[0], np.float64)
            nc = np.empty(2 * sk.shape[0], np.int64)
            nk[:ns] = sk[:ns]
            nc[:ns] = scol[:ns]
            sk = nk
            scol = nc
    sk[ns] = key
    scol[ns] = col
    return sk, scol, ns + 1


@kernel
def _heap_scan(kc, off, j0, j1, sc, ps, pe, g_orig, hk, ho, hp, hc, hn, limit, sk, scol, ns,
               M2):
    """Offer ``kc[j0:j1]`` (float32 keys of columns ``off + j``) to the
    max-heap by (key, original row); ``hn`` is its fill. While it is not
    full, keys ``<= limit`` (self skipped) go in; then a key goes in if it
    ranks before the top. An item the heap evicts, or a key within ``M2``
    (twice the margin) above the top, goes to the side list ``sk``/``scol``
    (``ns`` entries): its float64 key may still rank among the nearest
    (``_exact_topk``). Returns (hn, sk, scol, ns)."""
    hsize = hk.shape[0]
    for jj in range(j0, j1):
        key = kc[jj]
        col = off + jj
        if hn < hsize:
            if key <= limit and col != sc:
                hk[hn] = key
                ho[hn] = g_orig[col]
                hp[hn] = ps <= col < pe
                hc[hn] = col
                _sift_up(hk, ho, hp, hc, 0, hn)
                hn += 1
        elif key <= hk[0] + M2:  # self is +inf, never here
            o = g_orig[col]
            if _before(key, o, hk[0], ho[0]):
                sk, scol, ns = _side_push(sk, scol, ns, hk[0], hc[0], hk[0] + M2)
                hk[0] = key
                ho[0] = o
                hp[0] = ps <= col < pe
                hc[0] = col
                _sift_down(hk, ho, hp, hc, 0, hn, 0)
            else:
                sk, scol, ns = _side_push(sk, scol, ns, key, col, hk[0] + M2)
    return hn, sk, scol, ns


@kernel
def _heap_offer(kc, off, sc, ps, pe, g_orig, hk, ho, hp, hc, hn, limit, sk, scol, ns, M2):
    """Offer the float32 keys ``kc`` of columns ``off + j`` to the max-heap
    of the ``len(hk)`` nearest gallery items (see _heap_scan). ``limit`` is
    a key that every item that can be among the nearest does not exceed
    (or +inf): no item above it enters the heap. Returns (hn, sk, scol, ns).
    """
    m = kc.shape[0]
    hsize = hk.shape[0]
    # in chunks of RET_CHUNK: a vectorised count of candidates first, the heap
    # only for a chunk that has one (once the heap is full, few do). LLVM
    # vectorises the count when it reads a slice, not kc[c0 + i] (measured:
    # 0.09 against 0.6 ns per key)
    nch = m // RET_CHUNK
    for c in range(nch):
        c0 = c * RET_CHUNK
        blk = kc[c0:c0 + RET_CHUNK]
        top = hk[0] + M2 if hn == hsize else limit
        hits = 0
        for i in range(RET_CHUNK):
            hits += blk[i] <= top
        if hits:
            hn, sk, scol, ns = _heap_scan(kc, off, c0, c0 + RET_CHUNK, sc, ps, pe, g_orig, hk,
                                          ho, hp, hc, hn, limit, sk, scol, ns, M2)
    return _heap_scan(kc, off, nch * RET_CHUNK, m, sc, ps, pe, g_orig, hk, ho, hp, hc, hn,
                      limit, sk, scol, ns, M2)


@kernel
def _exact_topk(hk, hc, hn, sk, scol, ns, M2, ps, pe, g_orig, R, xr, xg, l2, off, a, bg):
    """(rank of the first positive, AP@R, positives among the R nearest) of
    the ``len(hk)`` nearest gallery items by (float64 key, original row).

    The heap holds the nearest by float32 key; every item whose float64 key
    can rank among the nearest has a float32 key within ``M2`` (twice the
    margin) of the heap's top, so it is in the heap or in the side list.
    Those candidates are recomputed in float64 (``exact_key``), sorted by
    (key, original row), and the first ``len(hk)`` ranked.
    """
    hsize = hk.shape[0]
    top = np.inf
    if hn == hsize and hn > 0:
        top = hk[0] + M2
    n = hn
    for i in range(ns):
        if sk[i] <= top:
            n += 1
    ck = np.empty(n, np.float64)
    co = np.empty(n, np.int64)
    cp = np.empty(n, np.bool_)
    m = 0
    for i in range(hn + ns):
        if i < hn:
            col = hc[i]
        else:
            if not sk[i - hn] <= top:
                continue
            col = scol[i - hn]
        ck[m] = exact_key(xr, xg, col, l2, off, a, bg[col])
        co[m] = g_orig[col]
        cp[m] = ps <= col < pe
        m += 1
    by_row = np.argsort(co, kind="mergesort")
    order = by_row[np.argsort(ck[by_row], kind="mergesort")]
    L = min(hsize, n)
    found = 0
    first = L + 1  # beyond every k that is reported
    total = 0.0
    hits = 0
    for i in range(L):
        if cp[order[i]]:
            found += 1
            if found == 1:
                first = i + 1
            if i < R:
                total += found / (i + 1)
                hits += 1
    return first, total / R, hits


@kernel
def process_block(S, t, rows, win, rep, gat, grid, ret, ver, ex):
    """Process one block of queries; see the module docstring for conventions.

    ``S`` (B, ng) float32 inner products, ``t`` the worker slot of the
    histograms; ``rows`` (:class:`Rows`), then what to compute, each phase
    with its switch ``on``: ``win`` (:class:`Windows`, the order statistic),
    ``rep`` (:class:`Report`), ``gat`` (:class:`Gather`), ``grid``
    (:class:`GridCounts`), ``ret`` (:class:`Ranking`) and ``ver``
    (:class:`Verify`: its ``hist`` and ``gather`` are the switches); ``ex``
    (:class:`Exact`) the rows for the float64 re-decision.

    Every decision is made as with the float64 keys of ``base.exact_keys``
    (the same on every machine): a float32 key within the row's margin of a
    boundary (report bin edge, grid threshold, order-statistic bracket, the
    retrieval heap's limit or top, verification bin edge) is recomputed in
    float64 and decided by that.

    Outputs indexed by block row (``cnt_*``, ``def_*``, ``gath_*``,
    ``first_rank``, ``ap``, ``n_rel``, ``hits``) are overwritten for every row; the
    histograms (first axis: worker slot) accumulate across calls in slot
    ``t``, so that no two workers write the same memory.

    Each row is read in chunks of COLS columns whose keys (computed once,
    vectorised) stay in the L1 cache while every phase reads them: the
    negatives below the range of interest are appended to ``vals`` and the
    retrieval heap sees the chunk; the order statistic and the grid counts
    then work on ``vals`` (10-15% of the keys with the default FAR range).

    Deferred elements (whose grid cell cannot be decided because the grid is
    only known within ``[lo_b, hi_b]``) and gathered elements are written up
    to the buffer capacity; ``def_n``/``gath_n`` always hold the true number,
    so the caller can detect an overflow and run the block again with larger
    buffers.

    Retrieval keeps, per row, a max-heap of the ``k = max(R, 8)`` nearest
    gallery items by (key, original row): one comparison per element once the
    heap is full, like a k-NN search.
    """
    l2, qn2, gn2, self_col, pos_start, pos_end, row_eval, row_sample, g_orig, off, aq, bg = rows
    sq = l2 and not off  # keys are squared distances (the grid guess takes their root)
    do_win, win_lo, win_hi, win_scale, F, win_below, win_hist = win
    do_rep, r_lo, r_scale, RB, rep_pos, rep_neg = rep
    do_gather, gat_lo, gat_hi, gath_val, gath_n, gath_below = gat
    (do_counts, lo_b, hi_b, cert_lo, base, inv_step, cnt_all, cnt_pos, def_val, def_pos,
     def_col, def_n) = grid
    do_ret, first_rank, ap, n_rel, hits_r = ret
    (v_hist, v_gather, v_lo, v_scale, v_bins, v_gscale, v_gbins, v_pos, v_neg, v_gpos, v_gneg,
     v_grp, v_want, v_gwant, v_glo, v_ghi, v_val, v_isp, v_n) = ver
    ex_q, ex_g, margin = ex
    B, Ng = S.shape
    K = lo_b.shape[0]
    key_skip = hi_b[K - 1]
    win_top = win_hi.max()
    kc_buf = np.empty(COLS, np.float64)
    v_idx = np.empty(COLS if v_hist or v_gather else 1, np.int64)
    vals = np.empty(Ng + 8, np.float64)
    idx = np.empty(Ng + 8 if do_counts else 1, np.int64)
    pkeys = np.empty(Ng, np.float64)
    acc = np.empty((COPIES, K), np.int64)
    for r in range(B):
        ps = pos_start[r]
        pe = pos_end[r]
        sc = self_col[r]
        qn = qn2[r]
        ev = row_eval[r]
        row = S[r]
        xr = ex_q[r]
        M = margin[r]
        a_r = aq[r]
        rep_on = do_rep and ev and row_sample[r]
        win_on = do_win and ev
        limit = win_top if win_on else key_skip
        compact_on = win_on or do_counts
        R = pe - ps
        if ps <= sc < pe:
            R -= 1
        ret_on = do_ret and R > 0
        hsize = min(max(R, 8), Ng - 1 if sc >= 0 else Ng) if ret_on else 0
        hk = np.empty(hsize, np.float64)
        ho = np.empty(hsize, np.int64)
        hp = np.empty(hsize, np.bool_)
        hc = np.empty(hsize, np.int64)
        hn = 0
        sk = np.empty(2 * hsize + 16, np.float64)
        scol = np.empty(2 * hsize + 16, np.int64)
        ns = 0
        vg = v_grp[r]
        nv = 0
        # the keys of the positives (self: +inf), for the counts and the heap
        if do_counts or ret_on:
            _keys_row(row[ps:pe], l2, qn, gn2[ps:pe], pkeys[:pe - ps])
            if off:
                _offset_row(pkeys[:pe - ps], l2, aq[r], bg[ps:pe])
            if ps <= sc < pe:
                pkeys[sc - ps] = np.inf
        # with R >= 8 the heap holds R items, and the R positives are at or
        # below their largest key: nothing above it can be among the nearest
        # (in float64; an item below that has a float32 key within 2 M of it)
        ret_limit = np.inf
        if ret_on and R >= 8:
            ret_limit = -np.inf
            for j in range(ps, pe):
                if j != sc:
                    ret_limit = max(ret_limit, pkeys[j - ps])
            ret_limit += 2 * M
        n = 0
        # the row in column chunks that stay in the L1 cache: every phase
        # reads the chunk's keys while they are there
        for c0 in range(0, Ng, COLS):
            c1 = min(Ng, c0 + COLS)
            kc = kc_buf[:c1 - c0]
            _keys_row(row[c0:c1], l2, qn, gn2[c0:c1], kc)
            if off:
                _offset_row(kc, l2, aq[r], bg[c0:c1])
            if c0 <= sc < c1:
                kc[sc - c0] = np.inf  # never paired with itself: above every threshold
            # the verification view: bins of float64 keys (the keys it recomputes
            # replace their float32 keys in kc, as the report histogram's do)
            if v_hist or v_gather:
                a = min(max(ps, c0), c1) - c0
                b = min(max(pe, c0), c1) - c0
                if v_hist and (ev or vg >= 0):
                    _verify_hist(kc, sc - c0, a, b, ev, vg, v_lo, v_scale, v_bins, v_gscale,
                                 v_gbins, v_pos[t], v_neg[t], v_gpos[t], v_gneg[t], xr, ex_g,
                                 c0, l2, off, a_r, bg, M, v_idx)
                if v_gather and (ev or vg >= 0):
                    nv = _verify_gather(kc, sc - c0, a, b, ev, vg, v_lo, v_scale, v_bins,
                                        v_want, v_gscale, v_gbins, v_gwant, v_glo, v_ghi,
                                        v_val[r], v_isp[r], nv, xr, ex_g, c0, l2, off, a_r,
                                        bg, M, v_idx)
            if rep_on:
                _report_hist(kc, sc - c0, ps - c0, pe - c0, r_lo, r_scale, RB, rep_pos[t],
                             rep_neg[t], xr, ex_g, c0, l2, off, a_r, bg, M)
            if compact_on:
                # the negatives: columns outside [ps, pe)
                a = min(max(ps, c0), c1) - c0
                b = min(max(pe, c0), c1) - c0
                if do_counts:  # with columns, and the margin (re-decided later)
                    n = _compact_idx(kc, 0, a, limit + M, vals, idx, n, c0)
                    n = _compact_idx(kc, b, c1 - c0, limit + M, vals, idx, n, c0)
                else:
                    n = _compact(kc, 0, a, limit, vals, n)
                    n = _compact(kc, b, c1 - c0, limit, vals, n)
            if ret_on:
                hn, sk, scol, ns = _heap_offer(kc, c0, sc, ps, pe, g_orig, hk, ho, hp, hc, hn,
                                               ret_limit, sk, scol, ns, 2 * M)
        if v_gather:
            v_n[r] = nv
        if win_on:
            _order_stat_row(vals, n, 1, win_lo, win_hi, win_scale, F, win_below[t],
                            win_hist[t])
        if do_gather:
            gath_n[r] = 0
            gath_below[r, 0] = 0
            gath_below[r, 1] = 0
        if do_counts:
            gat_on = do_gather and ev
            nd, ng_ = _counts_row(pkeys[:pe - ps], ps, vals, idx, n, key_skip, K, lo_b, hi_b,
                                  cert_lo, sq, base, inv_step, acc, cnt_all[r], cnt_pos[r],
                                  def_val[r], def_pos[r], def_col[r], gat_on, gat_lo, gat_hi,
                                  gath_val[r], gath_below[r], xr, ex_g, l2, off, a_r, bg, M)
            def_n[r] = nd
            if do_gather:
                gath_n[r] = ng_
        if do_ret:
            n_rel[r] = R
            if ret_on:
                first_rank[r], ap[r], hits_r[r] = _exact_topk(hk, hc, hn, sk, scol, ns, 2 * M,
                                                              ps, pe, g_orig, R, xr, ex_g, l2,
                                                              off, a_r, bg)
            else:
                first_rank[r] = 0
                ap[r] = 0.0
                hits_r[r] = 0


@kernel
def process_strip(S, S2, t, row0, c0, rows, win):
    """The order-statistic histograms from one strip of the upper triangle.

    ``rows`` is a :class:`StripRows`, ``win`` the :class:`Windows` (its
    ``on`` is not read: a strip only feeds the order statistic).

    Only when every query is also a gallery item with the same key either
    way (``tiles.Layout``): ``S[r, j - c0]`` is the product of queries ``i
    = row0 + r`` and ``j`` (``c0 <= j < nq``), ``S2[r, j - nq]`` that of
    query ``i`` and the gallery-only column ``j``. Each unordered negative
    pair of queries ``{i, j}``, ``j > i``, is read once and counted once for
    each of its two directions whose query is evaluated: for query ``i``
    when ``row_eval[r]``, for query ``j`` when ``col_lim[j]`` (the window
    top for an evaluated row, -inf for the others) admits it; when every
    row is evaluated (``all_eval``), one compaction serves both, with
    weight 2. A gallery-only column counts for query ``i`` alone. The
    histograms accumulate in slot ``t`` as in process_block.
    """
    l2, qn2, n2, qs, qe, gs, ge, row_eval, col_lim, all_eval, off, aq, bg = rows
    _, win_lo, win_hi, win_scale, F, win_below, win_hist = win
    B = S.shape[0]
    Ng = n2.shape[0]
    nq = col_lim.shape[0]
    win_top = win_hi.max()
    kc_buf = np.empty(COLS, np.float64)
    vals = np.empty(Ng + 8, np.float64)
    vals_1 = np.empty(Ng + 8, np.float64)
    vals_c = np.empty(Ng + 8, np.float64)
    for r in range(B):
        i = row0 + r
        ev = row_eval[r]
        qn = qn2[r]
        n = 0    # weight 2 (every row evaluated) or 1 (row i's direction)
        n_1 = 0  # weight 1: the gallery-only columns, when every row is evaluated
        n_c = 0  # weight 1: the columns' directions
        for seg in range(2):
            lo, hi = (i + 1, nq) if seg == 0 else (nq, Ng)
            ps, pe = (qs[r], qe[r]) if seg == 0 else (gs[r], ge[r])
            for a0 in range(lo, hi, COLS):
                a1 = min(hi, a0 + COLS)
                kc = kc_buf[:a1 - a0]
                if seg == 0:
                    _keys_row(S[r, a0 - c0:a1 - c0], l2, qn, n2[a0:a1], kc)
                else:
                    _keys_row(S2[r, a0 - nq:a1 - nq], l2, qn, n2[a0:a1], kc)
                if off:
                    _offset_row(kc, l2, aq[r], bg[a0:a1])
                # the negatives: columns outside [ps, pe)
                a = min(max(ps, a0), a1) - a0
                b = min(max(pe, a0), a1) - a0
                if seg == 1 and all_eval:
                    n_1 = _compact(kc, 0, a, win_top, vals_1, n_1)
                    n_1 = _compact(kc, b, a1 - a0, win_top, vals_1, n_1)
                elif all_eval or ev:
                    n = _compact(kc, 0, a, win_top, vals, n)
                    n = _compact(kc, b, a1 - a0, win_top, vals, n)
                if seg == 0 and not all_eval:
                    lims = col_lim[a0:a1]
                    n_c = _compact_each(kc, 0, a, lims, vals_c, n_c)
                    n_c = _compact_each(kc, b, a1 - a0, lims, vals_c, n_c)
        _order_stat_row(vals, n, 2 if all_eval else 1, win_lo, win_hi, win_scale, F,
                        win_below[t], win_hist[t])
        _order_stat_row(vals_1, n_1, 1, win_lo, win_hi, win_scale, F, win_below[t],
                        win_hist[t])
        _order_stat_row(vals_c, n_c, 1, win_lo, win_hi, win_scale, F, win_below[t],
                        win_hist[t])


@kernel
def _key_dist(key, sq):
    return np.sqrt(max(key, 0.0)) if sq else key


@kernel
def decide_deferred(vals, q, g, margin, grid, sq, xq, xg, l2, off, aq, bg):
    """The grid cells (``np.searchsorted(grid, d, 'left')``; ``len(grid)``:
    above every threshold) of deferred elements (key, query row, gallery
    column) on the exact ``grid`` of distances (keys are squared when
    ``sq``): the cell of every key within the query's ``margin`` when that
    is one cell, else the cell of the float64 key (``exact_key``).

    The float64 keys are computed in gallery-row order, so that each
    gallery row is read from memory once however many of its pairs are
    recomputed (the next row prefetched while the current one is used); the
    order is a counting sort by gallery row (linear, stable), not a
    comparison sort. The order changes no result: each key is a function of
    its pair alone.
    """
    n = vals.shape[0]
    K = grid.shape[0]
    inv = (K - 1) / (grid[K - 1] - grid[0]) if K > 1 and grid[K - 1] > grid[0] else 0.0
    cells = np.empty(n, np.int64)
    unsure = np.empty(n, np.int64)
    nu = 0
    g_min = xg.shape[0]
    g_max = -1
    for i in range(n):
        m = margin[q[i]]
        c = _grid_cell(_key_dist(vals[i] - m, sq), grid, inv)
        if c == _grid_cell(_key_dist(vals[i] + m, sq), grid, inv):
            cells[i] = c
        else:
            unsure[nu] = i
            nu += 1
            g_min = min(g_min, g[i])
            g_max = max(g_max, g[i])
    if nu == 0:
        return cells
    span = g_max - g_min + 1
    start = np.zeros(span + 1, np.int64)
    for u in range(nu):
        start[g[unsure[u]] - g_min + 1] += 1
    for j in range(span):
        start[j + 1] += start[j]
    order = np.empty(nu, np.int64)
    for u in range(nu):
        i = unsure[u]
        j = g[i] - g_min
        order[start[j]] = i
        start[j] += 1
    prev = -1
    for u in range(nu):
        i = order[u]
        gi = g[i]
        if gi != prev:  # a new gallery row: prefetch the one after it
            for v in range(u + 1, min(nu, u + 64)):
                if g[order[v]] != gi:
                    _prefetch_row(xg, g[order[v]])
                    break
            prev = gi
        if u + 4 < nu:
            _prefetch_row(xq, q[order[u + 4]])
        a = aq[q[i]] if off else 0.0
        b = bg[gi] if off else 0.0
        key = exact_key(xq[q[i]], xg, gi, l2, off, a, b)
        cells[i] = _grid_cell(_key_dist(key, sq), grid, inv)
    return cells


@kernel
def add_cells(cells, pos, q, q2, two, q_class, q_group, G, c_all, c_pos, g_all, g_pos):
    """Count elements at grid ``cells`` (``K`` and above: above the grid, not
    counted) for the class and group (``0 <= group < G``) of their query row
    ``q`` and, where ``two``, of their second query row ``q2`` (-1: none);
    ``pos`` the positives. Integer sums: the order of the elements changes
    nothing."""
    K = c_all.shape[1]
    for e in range(cells.shape[0]):
        c = cells[e]
        if c < 0 or c >= K:
            continue
        p = pos[e]
        for side in range(2 if two else 1):
            r = q[e] if side == 0 else q2[e]
            if r < 0:
                continue
            k = q_class[r]
            c_all[k, c] += 1
            if p:
                c_pos[k, c] += 1
            if G > 0:
                h = q_group[r]
                if 0 <= h < G:
                    g_all[h, c] += 1
                    if p:
                        g_pos[h, c] += 1


@kernel
def _grid_cell(d, grid, inv):
    """``np.searchsorted(grid, d, 'left')`` on an even grid (``inv`` cells
    per unit), from a guess: a step or two, not a binary search."""
    K = grid.shape[0]
    x = (d - grid[0]) * inv
    k = int(min(max(np.ceil(x), 0.0), K)) if x == x else 0
    while k > 0 and grid[k - 1] >= d:
        k -= 1
    while k < K and grid[k] < d:
        k += 1
    return k


@locked
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
