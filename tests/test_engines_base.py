"""The shared engine helpers of ``opis_cli.engines.base`` against the kernels.

numpy code (the pilot of the exact engine, the knn engine) and the compiled
kernels each have their copy of a few formulas: the key of an inner product,
the bin of a value, AP@R. These tests hold the copies equal, bit for bit,
on seeded random inputs.
"""

from __future__ import annotations

import numpy as np
import pytest

from opis_cli.engines import _kernels, base
from opis_cli.prepare import prepare


def _products(seed: int, b: int = 7, m: int = 300):
    rng = np.random.default_rng(seed)
    S = rng.standard_normal((b, m)).astype(np.float32)
    qn2 = rng.uniform(0, 5, b)
    gn2 = rng.uniform(0, 5, m)
    return S, qn2, gn2


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("l2", [False, True])
def test_pair_keys_equal_the_kernels_keys(seed, l2):
    S, qn2, gn2 = _products(seed)
    keys = base.pair_keys(S, qn2, gn2, l2)
    assert keys.dtype == np.float64 and keys.shape == S.shape
    row = np.empty(S.shape[1])
    for r in range(S.shape[0]):
        _kernels._keys_row(S[r], l2, qn2[r], gn2, row)
        np.testing.assert_array_equal(keys[r], row)
        for j in (0, 17, S.shape[1] - 1):
            assert keys[r, j] == _kernels._key(S[r, j], qn2[r], gn2[j], l2)


def test_pair_keys_formula():
    S = np.array([[0.5, -1.0]], np.float32)
    np.testing.assert_array_equal(base.pair_keys(S, np.zeros(1), np.zeros(2), False), [[0.5, 2.0]])
    np.testing.assert_array_equal(base.pair_keys(S, np.array([1.0]), np.array([1.0, 4.0]), True),
                                  [[1.0, 7.0]])


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_key_span_holds_every_key(metric):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((120, 6)) * rng.uniform(0.1, 3, (120, 1))
    y = rng.integers(0, 5, 120)
    prep = prepare(x, y, metric=metric)
    lo, hi = base.key_span(prep)
    keys = base.pair_keys(prep.xq @ prep.xg.T, prep.qn2, prep.gn2, metric == "l2")
    tol = 1e-5 * (hi - lo)
    assert lo - tol <= keys.min() and keys.max() <= hi + tol


@pytest.mark.parametrize("l2", [False, True])
def test_key_distance_round_trip(l2):
    rng = np.random.default_rng(4)
    d = np.concatenate([rng.uniform(0, 3, 1000), [0.0, 1e-100, 1.0, 2.0, 1e150]])
    keys = base.dist_to_key(d, l2)
    np.testing.assert_array_equal(base.key_to_dist(keys, l2), d)
    for v in d[::97]:  # the scalar form gives the same numbers, as floats
        back = base.key_to_dist(base.dist_to_key(float(v), l2), l2)
        assert isinstance(back, float) and back == v
    assert base.key_to_dist(np.inf, l2) == np.inf
    if l2:  # rounding can make a squared distance slightly negative: distance 0
        assert base.key_to_dist(-1e-12, True) == 0.0
        np.testing.assert_array_equal(base.key_to_dist(np.array([-1e-12, 4.0]), True), [0, 2])
    else:
        assert base.key_to_dist(-0.25, False) == -0.25


@pytest.mark.parametrize("l2", [False, True])
def test_report_edges_are_even_in_key_space(l2):
    span = (0.0, 2.0) if not l2 else (0.0, 37.5)
    edges = base.report_edges(span, l2)
    assert edges.shape == (base.REPORT_BINS + 1,) and edges.dtype == np.float64
    assert edges[0] == base.key_to_dist(span[0], l2)
    assert edges[-1] == base.key_to_dist(span[1], l2)
    assert (np.diff(edges) > 0).all()
    keys = base.dist_to_key(edges, l2)
    np.testing.assert_allclose(np.diff(keys), (span[1] - span[0]) / base.REPORT_BINS, rtol=1e-9)
    # the middle of key bin i falls in report bin i
    mids = np.linspace(span[0], span[1], base.REPORT_BINS + 1)[:-1] + \
        0.5 * (span[1] - span[0]) / base.REPORT_BINS
    np.testing.assert_array_equal(
        base.value_bins(mids, span[0], base.report_scale(span), base.REPORT_BINS),
        np.arange(base.REPORT_BINS))


def test_value_bins_equal_the_kernels_bin():
    rng = np.random.default_rng(6)
    v = np.concatenate([rng.uniform(-0.5, 2.5, 2000), [0.0, 1.0, 2.0, -1e-300]])
    lo, scale, nbins = 0.0, 100.0, 200
    got = base.value_bins(v, lo, scale, nbins)
    expect = [_kernels._bin(x, lo, scale, nbins) for x in v]
    np.testing.assert_array_equal(got, expect)
    assert got.min() == 0 and got.max() == nbins - 1  # out of range: clipped
    # a non-finite value goes to the first bin
    np.testing.assert_array_equal(base.value_bins(np.array([np.inf, np.nan]), lo, scale, nbins),
                                  [0, 0])


def test_rank_bin_matches_sorting():
    rng = np.random.default_rng(7)
    values = rng.integers(0, 50, 400)
    hist = np.bincount(values, minlength=50)
    srt = np.sort(values)
    for below in (0, 13):
        for r in range(below + 1, below + len(values) + 1):
            bb, within = base.rank_bin(hist, r, below)
            assert bb == srt[r - below - 1]
            assert within == r - below - int(hist[:bb].sum())
        assert base.rank_bin(hist, below, below) is None
        assert base.rank_bin(hist, below + len(values) + 1, below) is None


def _kernel_result(keys, orig, pos, R, shift=None, M=0.0):
    """(first rank, AP@R, positives among the R nearest) of the kernel's ranking step (``_exact_topk``) over
    the items: l2 keys of one-dimensional rows, the query at 0 and item i at
    distance ``keys[i]`` (exact in float64: a float32 number squared), the
    positives placed first as columns ``[0, P)``. The kernel is given those
    keys moved by ``shift`` (within the margin ``M``) as its "float32" keys."""
    cols = np.argsort(~pos, kind="stable")  # column c holds item cols[c]
    xg = np.ascontiguousarray(keys[cols].astype(np.float32)[:, None])
    g_orig = orig[cols].astype(np.int64)
    n = len(keys)
    hc = np.arange(n, dtype=np.int64)
    hk = xg[:, 0].astype(np.float64) ** 2
    if shift is not None:
        hk = hk + shift[cols]
    side = np.zeros(0)
    return _kernels._exact_topk(hk, hc, n, side, np.zeros(0, np.int64), 0, 2 * M, 0,
                                int(pos.sum()), g_orig, R, np.zeros(1, np.float32), xg, True,
                                False, 0.0, np.zeros(n))


@pytest.mark.parametrize("seed", range(30))
def test_kernel_ranks_by_float64_keys_however_the_float32_keys_moved(seed):
    """With every float32 key moved within the margin (so that near-ties
    swap in float32), the kernel's ranking is still that of the float64 keys
    by (key, original row)."""
    rng = np.random.default_rng(100 + seed)
    L = int(rng.integers(1, 80))
    M = 1e-3
    keys = np.round(rng.uniform(0.3, 1, L), 1)  # ties and near-ties
    keys += rng.integers(-2, 3, L) * rng.choice([0.0, 1e-4, 4e-4], L)
    orig = rng.permutation(L)
    pos = rng.random(L) < rng.uniform(0.05, 0.9)
    R = int(rng.integers(1, L + 5))
    k64 = keys.astype(np.float32).astype(np.float64) ** 2
    shift = rng.choice([-1.0, 1.0], L) * rng.uniform(0.6, 1.0, L) * M * (rng.random(L) < 0.8)
    first_k, ap_k, hits_k = _kernel_result(keys, orig, pos, R, shift, M)
    ranked = pos[np.lexsort((orig, k64))]
    first, ap = base.retrieval_at_r(ranked[None, :], np.array([R]), beyond=L + 1)
    assert (first_k, ap_k) == (first[0], ap[0])
    assert hits_k == base.hits_at_r(ranked[None, :], np.array([R]))[0]


@pytest.mark.parametrize("seed", range(20))
def test_kernel_ap_at_r_equals_the_shared_definition(seed):
    rng = np.random.default_rng(seed)
    L = int(rng.integers(1, 60))
    keys = np.round(rng.uniform(0, 1, L), 1)  # ties, broken by the original row
    orig = rng.permutation(L)
    pos = rng.random(L) < rng.uniform(0.05, 0.9)
    R = int(rng.integers(1, L + 5))  # R may exceed the list (positives beyond it)
    first_k, ap_k, hits_k = _kernel_result(keys, orig, pos, R)
    ranked = pos[np.lexsort((orig, keys.astype(np.float32)))]
    first, ap = base.retrieval_at_r(ranked[None, :], np.array([R]), beyond=L + 1)
    assert first[0] == first_k
    assert ap[0] == ap_k  # the same sums in the same order: bit for bit
    # R-Precision's numerator: the positives among the R nearest, counted by hand
    assert hits_k == base.hits_at_r(ranked[None, :], np.array([R]))[0] \
        == sum(1 for i in range(min(R, L)) if ranked[i])


def test_retrieval_at_r_by_hand():
    hits = np.array([[False, True, True, False],
                     [False, False, False, False],
                     [True, False, False, True]])
    first, ap = base.retrieval_at_r(hits, np.array([2, 3, 0]), beyond=99)
    np.testing.assert_array_equal(first, [2, 99, 1])
    # query 0: R = 2, relevant at ranks 2 (precision 1/2) within R -> 0.5 / 2
    np.testing.assert_allclose(ap, [0.25, 0.0, 0.0])
    # positives among the R nearest: query 0 one of 2, query 2 (R = 0) none
    np.testing.assert_array_equal(base.hits_at_r(hits, np.array([2, 3, 0])), [1, 0, 0])
