"""The shared stages of the engines (``engines/select.py``, ``engines/ranking.py``)
against deliberately naive readings of SPEC 2, 5 and 6.

Every engine, ``opis calibrate`` and the calibration fit find order
statistics through one histogram -> bracket -> gather -> select primitive and
rank retrieval lists through one definition; these tests hold that primitive
to a sort of all the keys, and the ragged-list ranking (the Dask engine's) to
the matrix one, on seeded random inputs with ties and duplicates, plus
hand-worked cases.
"""

from __future__ import annotations

import numpy as np
import pytest

from opis_cli.engines import ranking, select
from opis_cli.prepare import prepare


def _keys(rng, n):
    """Keys with ties and duplicates: rounded uniforms, some repeated."""
    k = np.round(rng.uniform(-0.5, 2.0, n), int(rng.integers(1, 4)))
    k[rng.integers(0, n, n // 5)] = k[0]
    return k


# -- bracket and select ---------------------------------------------------------


def test_bracket_by_hand():
    hist = np.array([2, 0, 3, 1])
    br = select.bracket(hist, 3)  # ranks 1-2 in bin 0, 3-5 in bin 2
    assert (br.rank, br.bin, br.lo, br.hi, br.below) == (3, 2, 2, 2, 2)
    br = select.bracket(hist, 3, pad=1)
    assert (br.bin, br.lo, br.hi, br.below) == (2, 1, 3, 2)
    br = select.bracket(hist, 2, pad=5)  # clipped at both ends
    assert (br.bin, br.lo, br.hi, br.below) == (0, 0, 3, 0)
    assert select.bracket(hist, 6) == select.Bracket(6, 3, 3, 3, 5)
    assert select.bracket(hist, 7) is None
    assert select.bracket(hist, 0) is None
    assert select.bracket_at(hist, 1, 1) == select.Bracket(0, 1, 0, 2, 0)
    # the 4th smallest of 5 keys: bins 0..1 hold 2 keys below the bracket
    assert select.Bracket(4, 2, 2, 2, 2).select(np.array([0.9, 0.7, 0.8])) == 0.8


def test_key_bins_by_hand():
    kb = select.KeyBins.over(0.0, 2.0, 4)
    assert kb.scale == 2.0
    assert kb.of(np.array([-1.0, 0.0, 0.49, 0.5, 1.99, 2.0, 9.0, np.nan])).tolist() == \
        [0, 0, 0, 1, 3, 3, 3, 0]
    assert kb.histogram(np.array([0.1, 0.2, 1.7])).tolist() == [2, 0, 0, 1]
    assert kb.edge(3) == 1.5
    lo, hi = select.padded_span((0.0, 2.0))
    assert lo < 0.0 and hi > 2.0 and hi - lo == pytest.approx(2.004 + 2e-9)


@pytest.mark.parametrize("seed", range(12))
def test_bracket_select_is_the_sorted_rank(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    keys = _keys(rng, n)
    kb = select.KeyBins.over(keys.min() - 0.1, keys.max() + 0.1, int(rng.integers(1, 64)))
    hist = kb.histogram(keys)
    srt = np.sort(keys)
    bins = kb.of(keys)
    for pad in (0, 1, 3):
        for r in range(1, n + 1):
            br = select.bracket(hist, r, pad)
            assert br.lo <= br.bin <= br.hi
            # below: the keys in bins under the bracket, counted naively
            assert br.below == int((bins < br.lo).sum())
            assert br.select(keys[br.holds(bins)]) == srt[r - 1]
            assert select.select_or_none(keys[br.holds(bins)], r, br.below) == srt[r - 1]
        assert select.bracket(hist, n + 1, pad) is None


def test_select_or_none_outside_the_keys():
    assert select.select_or_none(np.array([1.0, 2.0]), 3, 0) is None
    assert select.select_or_none(np.array([1.0, 2.0]), 1, 1) is None
    assert select.select_or_none(np.array([1.0, 2.0]), 3, 1) == 2.0


@pytest.mark.parametrize("seed", range(6))
def test_gather_rows_grows_and_keeps_every_element(seed):
    rng = np.random.default_rng(seed)
    B = int(rng.integers(0, 30))
    want = rng.integers(0, 40, B)
    rows_vals = [rng.standard_normal(w) for w in want]
    calls = []

    def call(vals, ids, n):  # a kernel: fills what fits, says what it wanted
        calls.append(vals.shape[1])
        for i, v in enumerate(rows_vals):
            m = min(len(v), vals.shape[1])
            vals[i, :m] = v[:m]
            ids[i, :m] = i
            n[i] = len(v)

    cap, (vals, ids), rows = select.gather_rows(B, 4, (np.float64, np.int64), call)
    expect = np.concatenate(rows_vals) if B else np.zeros(0)
    np.testing.assert_array_equal(vals, expect)
    np.testing.assert_array_equal(ids, np.repeat(np.arange(B), want))
    np.testing.assert_array_equal(rows, np.repeat(np.arange(B), want))
    assert cap >= (want.max() if B else 0)
    assert len(calls) == (1 if B == 0 or want.max() <= 4 else 2)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
@pytest.mark.parametrize("seed", range(3))
def test_pilot_negative_keys_are_the_negative_pairs(metric, seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 90))
    x = rng.standard_normal((n, 5)).astype(np.float32)
    y = rng.integers(0, 6, n)
    prep = prepare(x, y, metric=metric)
    pick = select.pilot_rows(np.arange(len(prep.q_rows)), int(rng.integers(1, 30)))
    cols = select.pilot_columns(len(pick), len(prep.g_rows), int(rng.integers(50, 500)))
    got = np.sort(select.pilot_negative_keys(prep, pick, cols))
    naive = []
    for q in pick:
        for g in cols:
            if prep.g_class[g] == prep.q_class[q]:
                continue  # a positive (or the row itself)
            s = np.float64(np.float32(prep.xq[q] @ prep.xg[g]))
            naive.append(1.0 - s if metric == "cosine" else prep.qn2[q] + prep.gn2[g] - 2 * s)
    np.testing.assert_allclose(got, np.sort(naive), rtol=0, atol=1e-5)


def test_pilot_rows_and_columns_by_hand():
    assert select.pilot_rows(np.arange(10, 20), 4).tolist() == [10, 13, 16, 19]
    assert select.pilot_rows(np.arange(3), 9).tolist() == [0, 1, 2]
    assert select.pilot_rows(np.zeros(0, np.int64), 5).tolist() == []
    assert select.pilot_columns(10, 100, 250).tolist() == list(range(0, 100, 4))
    assert select.pilot_columns(1, 5, 10**6).tolist() == [0, 1, 2, 3, 4]


# -- retrieval ranking ----------------------------------------------------------


def test_list_length_and_tie_order_by_hand():
    assert ranking.LIST_MIN == 8
    assert ranking.list_length(3, 100) == 8
    assert ranking.list_length(20, 100) == 20
    assert ranking.list_length(20, 12) == 12
    assert ranking.list_length(np.array([0, 9, 30]), np.array([5, 50, 10])).tolist() == [5, 9, 10]
    keys = np.array([0.5, 0.1, 0.5, 0.1])
    rows = np.array([7, 9, 3, 2])
    assert ranking.rank_order(keys, rows).tolist() == [3, 1, 2, 0]


def _naive(flags: list[bool], R: int) -> tuple[int, float, int]:
    """SPEC 6 read literally on one ranked list: first relevant rank (list
    length + 1 when none listed), AP@R, relevant among the R nearest."""
    first = next((i + 1 for i, f in enumerate(flags) if f), len(flags) + 1)
    total, found = 0.0, 0
    for i in range(min(R, len(flags))):
        if flags[i]:
            found += 1
            total += found / (i + 1)
    return first, (total / R if R else 0.0), sum(flags[:R])


@pytest.mark.parametrize("seed", range(10))
def test_ragged_lists_rank_as_the_matrix_definition(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 25))
    R = rng.integers(0, 15, n)
    h = np.where(R > 0, ranking.list_length(R, rng.integers(1, 30, n)), 0)
    flags = [rng.random(int(k)) < rng.uniform(0.05, 0.9) for k in h]
    q = np.repeat(np.arange(n), h)
    isp = np.concatenate(flags) if h.sum() else np.zeros(0, bool)
    first, ap, hits = ranking.rank_lists(q, isp, h, R, n)
    for i in range(n):
        if h[i] == 0:
            assert (first[i], ap[i], hits[i]) == (0, 0.0, 0)
            continue
        f, a, k = _naive(list(flags[i]), int(R[i]))
        assert (first[i], hits[i]) == (f, k)
        assert ap[i] == a  # the same running sum in rank order: bit for bit
        mf, ma = ranking.retrieval_at_r(flags[i][None, :], R[i:i + 1], beyond=int(h[i]) + 1)
        assert (mf[0], ma[0]) == (first[i], ap[i])
        assert ranking.hits_at_r(flags[i][None, :], R[i:i + 1])[0] == hits[i]
