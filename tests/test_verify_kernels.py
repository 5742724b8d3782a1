"""The verification view's kernels (``_kernels._verify_hist``, ``_verify_gather``)
against a naive numpy version, on keys that sit near bin edges.

The float32 keys are the float64 keys (``exact_key``) moved by up to 0.95
of a margin ``M`` that is a fifth of a bin wide (so that 40% of the keys lie
within it of an edge, and many of them on the other side of one), the way a
BLAS kernel that rounds differently would move them. Whatever the moves, the
histograms must be those of the float64 keys and the gathered keys the float64
keys of the wanted bins (SPEC 2), in the global scope and in a group scope
whose bins are eight global bins wide.
"""

from __future__ import annotations

import numpy as np
import pytest

from opis_cli.engines import _kernels
from opis_cli.engines.base import value_bins
from opis_cli.engines.verify import key_bracket

LO, SPAN, BINS, GBINS = 0.0, 2.0, 64, 8
SCALE, GSCALE = BINS / SPAN, GBINS / SPAN
M = 0.2 / SCALE
G = 3


def _case(seed: int, metric: str):
    """Rows, the chunk's columns, float64 keys and moved float32 keys."""
    rng = np.random.default_rng(seed)
    D, ng, c0, m = 21, 420, 37, 300
    xq = rng.standard_normal((6, D)).astype(np.float32)
    xg = rng.standard_normal((ng, D)).astype(np.float32)
    if metric == "cosine":
        xq /= np.linalg.norm(xq, axis=1, keepdims=True)
        xg /= np.linalg.norm(xg, axis=1, keepdims=True)
    else:
        xq *= np.float32(0.12)
        xg *= np.float32(0.12)
    xg[c0 + 40:c0 + 60] = xg[c0 + 10]  # duplicate gallery rows: equal float64 keys
    l2 = metric == "l2"
    bg = np.zeros(ng)
    k64 = np.array([[_kernels.exact_key(xq[r], xg, c0 + j, l2, False, 0.0, 0.0)
                     for j in range(m)] for r in range(len(xq))])
    move = rng.uniform(-0.95, 0.95, k64.shape) * M
    move[:, ::7] = 0.95 * M * rng.choice([-1.0, 1.0], size=move[:, ::7].shape)
    return xq, xg, bg, c0, l2, k64, k64 + move


#: per query row: (own column in the chunk or -1, positives [a, b), evaluated, group)
ROWS = [(-1, 0, 0, True, -1), (5, 0, 30, True, 0), (120, 100, 160, True, 2),
        (-1, 250, 300, False, 1), (299, 200, 299, True, 1), (0, 0, 1, False, -1)]


def _bins(keys, scale, n):
    return value_bins(np.asarray(keys, np.float64), LO, scale, n)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
@pytest.mark.parametrize("seed", range(3))
def test_verify_hist_bins_every_key_by_its_float64_key(metric, seed):
    xq, xg, bg, c0, l2, k64, k32 = _case(seed, metric)
    m = k64.shape[1]
    hpos, hneg = np.zeros(BINS, np.int64), np.zeros(BINS, np.int64)
    gpos, gneg = np.zeros((G, GBINS), np.int64), np.zeros((G, GBINS), np.int64)
    want_pos, want_neg = np.zeros(BINS, np.int64), np.zeros(BINS, np.int64)
    want_gpos, want_gneg = np.zeros((G, GBINS), np.int64), np.zeros((G, GBINS), np.int64)
    f32_neg = np.zeros(BINS, np.int64)
    idx = np.empty(_kernels.COLS, np.int64)
    for r, (sc, a, b, ev, grp) in enumerate(ROWS):
        kb = k32[r].copy()
        if sc >= 0:
            kb[sc] = np.inf
        before = kb.copy()
        _kernels._verify_hist(kb, sc, a, b, ev, grp, LO, SCALE, BINS, GSCALE, GBINS, hpos, hneg,
                              gpos, gneg, xq[r], xg, c0, l2, False, 0.0, bg, M, idx)
        cols = np.array([j for j in range(m) if j != sc])
        # a key the kernel changed became its float64 key; the own column stays +inf
        changed = cols[kb[cols] != before[cols]]
        assert np.array_equal(kb[changed], k64[r, changed])
        if sc >= 0:
            assert kb[sc] == np.inf
        pos = (cols >= a) & (cols < b)
        if ev:
            want_pos += np.bincount(_bins(k64[r, cols[pos]], SCALE, BINS), minlength=BINS)
            want_neg += np.bincount(_bins(k64[r, cols[~pos]], SCALE, BINS), minlength=BINS)
            f32_neg += np.bincount(_bins(k32[r, cols[~pos]], SCALE, BINS), minlength=BINS)
        if grp >= 0:
            want_gpos[grp] += np.bincount(_bins(k64[r, cols[pos]], GSCALE, GBINS),
                                          minlength=GBINS)
            want_gneg[grp] += np.bincount(_bins(k64[r, cols[~pos]], GSCALE, GBINS),
                                          minlength=GBINS)
    assert np.array_equal(hpos, want_pos) and np.array_equal(hneg, want_neg)
    assert np.array_equal(gpos, want_gpos) and np.array_equal(gneg, want_gneg)
    assert not np.array_equal(f32_neg, want_neg)  # the float32 keys would bin otherwise


@pytest.mark.parametrize("metric", ["cosine", "l2"])
@pytest.mark.parametrize("seed", range(3))
def test_verify_gather_keeps_the_float64_keys_of_wanted_bins(metric, seed):
    xq, xg, bg, c0, l2, k64, k32 = _case(seed, metric)
    m = k64.shape[1]
    rng = np.random.default_rng(100 + seed)
    want = rng.random(BINS) < 0.3
    gwant = rng.random((G, GBINS)) < 0.4
    brackets = [key_bracket(want, LO, SCALE)] + [key_bracket(g, LO, GSCALE) for g in gwant]
    g_lo, g_hi = min(br[0] for br in brackets), max(br[1] for br in brackets)
    idx = np.empty(_kernels.COLS, np.int64)
    for r, (sc, a, b, ev, grp) in enumerate(ROWS):
        kb = k32[r].copy()
        if sc >= 0:
            kb[sc] = np.inf
        val = np.zeros(m + 1)
        isp = np.zeros(m + 1, np.bool_)
        n = _kernels._verify_gather(kb, sc, a, b, ev, grp, LO, SCALE, BINS, want, GSCALE, GBINS,
                                    gwant, g_lo, g_hi, val, isp, 1, xq[r], xg, c0, l2, False,
                                    0.0, bg, M, idx)
        expect = [j for j in range(m) if j != sc and (
            (ev and want[_bins(k64[r, j], SCALE, BINS)])
            or (grp >= 0 and gwant[grp, _bins(k64[r, j], GSCALE, GBINS)]))]
        assert n == 1 + len(expect)
        assert np.array_equal(val[1:n], k64[r, expect])
        assert np.array_equal(isp[1:n], [a <= j < b for j in expect])


def test_margin_zero_keeps_the_float32_keys():
    """The benchmarks' float32 decisions (every margin 0): both kernels then
    see the float32 keys only, so that their passes agree with each other."""
    xq, xg, bg, c0, l2, k64, k32 = _case(7, "cosine")
    m = k64.shape[1]
    hpos, hneg = np.zeros(BINS, np.int64), np.zeros(BINS, np.int64)
    gpos, gneg = np.zeros((1, 1), np.int64), np.zeros((1, 1), np.int64)
    idx = np.empty(_kernels.COLS, np.int64)
    kb = k32[0].copy()
    _kernels._verify_hist(kb, -1, 0, 10, True, -1, LO, SCALE, BINS, 1.0, 1, hpos, hneg, gpos,
                          gneg, xq[0], xg, c0, False, False, 0.0, bg, 0.0, idx)
    assert np.array_equal(kb, k32[0])
    assert np.array_equal(hpos + hneg, np.bincount(_bins(k32[0], SCALE, BINS), minlength=BINS))
    want = np.ones(BINS, bool)
    val, isp = np.zeros(m), np.zeros(m, np.bool_)
    n = _kernels._verify_gather(kb, -1, 0, 10, True, -1, LO, SCALE, BINS, want, 1.0, 1,
                                np.zeros((1, 1), bool), -np.inf, np.inf, val, isp, 0, xq[0], xg,
                                c0, False, False, 0.0, bg, 0.0, idx)
    assert n == m and np.array_equal(val, k32[0])
