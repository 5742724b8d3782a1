"""The counts pass over the upper triangle (engines/symmetric.py).

Every row a query and a gallery item: the counts pass reads each product
once and counts it for both its queries, with per-row retrieval heaps kept
across strips. It must give the JSON bytes of the full-row pass
(``symmetric._ENABLED = False``) on inputs with ties, duplicate rows across
labels, singletons, groups, excluded classes, both metrics and both kinds of
range; over many small tiles and two workers; and when a row's near misses
overflow its side list (ranked again on its full row).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import reference as ref
from data_gen import gaussian, integer_rows
from opis_cli import evaluate
from opis_cli.engines import base, symmetric
from opis_cli.prepare import prepare
from ref_compare import compare, well_conditioned


@pytest.fixture
def small_tiles(monkeypatch):
    monkeypatch.setattr(base, "TILE_BYTES", 1)


@pytest.fixture
def two_threads():
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    yield
    numba.set_num_threads(before)


@pytest.fixture
def spies(monkeypatch):
    """Counts of the symmetric pass's runs and of the rows ranked again."""
    seen = {"runs": 0, "again": 0}
    run, again = symmetric.run_sym_counts, symmetric._rank_again

    def run_spy(*a, **k):
        seen["runs"] += 1
        return run(*a, **k)

    def again_spy(prep, cfg, which, *a):
        seen["again"] += len(which)
        return again(prep, cfg, which, *a)

    monkeypatch.setattr(symmetric, "run_sym_counts", run_spy)
    monkeypatch.setattr(symmetric, "_rank_again", again_spy)
    return seen


def _both(monkeypatch, x, y, **opts):
    """(JSON with the symmetric pass, JSON with full rows)."""
    out = []
    for on in (True, False):
        monkeypatch.setattr(symmetric, "_ENABLED", on)
        out.append(json.loads(evaluate(x, y, timestamp=False, **opts).to_json()))
    return out


CASES = [
    dict(),
    dict(metric="l2"),
    dict(far_range=(0.002, 0.6), num_thresholds=31),
    dict(calibration_range=(2.0, 9.0), metric="l2", num_thresholds=21),
    dict(min_class_rows=12),
    dict(groups=True),
]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("case", range(len(CASES)))
def test_upper_triangle_counts_give_the_full_row_bytes(monkeypatch, small_tiles, two_threads,
                                                       spies, seed, case):
    x, y = integer_rows(seed, n=230 + 17 * seed, dim=3, n_classes=9)
    opts = dict(CASES[case])
    if opts.pop("groups", False):
        opts["groups"] = [f"g{(i * 7) % 4}" for i in range(len(y))]
    sym, full = _both(monkeypatch, x, y, **opts)
    assert spies["runs"] == 1
    assert sym == full


@pytest.mark.parametrize("seed", range(3))
def test_upper_triangle_counts_match_the_reference(small_tiles, two_threads, spies, seed):
    """Against the float64 reference directly, singleton classes and groups
    included (inputs without a pair within float32 rounding of a threshold,
    as in test_engine_tiles)."""
    metric = "cosine" if seed % 2 else "l2"

    def make(s):
        x, y = gaussian(s, n=300, dim=6, n_classes=12, singletons=3)
        return x, y, dict(metric=metric, groups=[f"g{i % 3}" for i in range(len(y))],
                          num_thresholds=11)

    (x, y, opts), r = well_conditioned(make, 70 + seed, lambda case: ref.evaluate(
        case[0], case[1], **case[2]))
    res = evaluate(x, y, timestamp=False, **opts)
    assert spies["runs"] == 1
    compare(res, r, rel=1e-6)


def test_rows_whose_near_misses_overflow_are_ranked_again(monkeypatch, small_tiles, two_threads,
                                                          spies):
    """Two hundred copies of one row across labels: their nearest items tie far
    beyond a side list's room; those rows are ranked on their full rows."""
    x, y = integer_rows(5, n=400, dim=3, n_classes=10)
    x[:200] = x[200]
    sym, full = _both(monkeypatch, x, y, metric="l2", calibration_range=(0.5, 6.0))
    assert spies["again"] > 0
    assert sym == full


@pytest.mark.parametrize("seed", range(2))
def test_rows_with_few_relevant_items(monkeypatch, small_tiles, two_threads, spies, seed):
    """Classes of 2-7 rows (R < 8: the heap keeps 8 items and has no limit)
    beside larger ones."""
    rng = np.random.default_rng(seed)
    x, y = gaussian(seed + 80, n=260, dim=5, n_classes=60)
    y = np.asarray(y)
    y[:40] = rng.choice(["a", "b", "c", "d", "e", "f", "g"], 40)
    sym, full = _both(monkeypatch, x, y, num_thresholds=11)
    assert spies["runs"] == 1
    assert sym == full


def test_the_route_is_taken_only_where_it_applies(monkeypatch, spies):
    """Not with a query/gallery split, the verification view, offsets, or
    heaps above their budget; the results are the same either way."""
    x, y = gaussian(90, n=200, dim=6, n_classes=8)
    evaluate(x, y, is_query=np.arange(200) % 3 != 0, timestamp=False)
    evaluate(x, y, verification=True, timestamp=False)
    assert spies["runs"] == 0
    monkeypatch.setattr(symmetric, "HEAP_BYTES", 0)
    evaluate(x, y, timestamp=False)
    assert spies["runs"] == 0
    monkeypatch.undo()
    prep = prepare(x, y, metric="cosine")
    from opis_cli.engines.exact import PassConfig

    cfg = PassConfig(K=11, l2=False, block_rows=10**6, tile=64, do_ret=True)
    assert symmetric.applies(prep, cfg)
    n = prep.n_samples
    assert not symmetric.applies(prep.with_offsets(np.full(n, 0.1), np.full(n, 0.1)), cfg)


def test_heap_limits_bound_every_relevant_item():
    """``ret_limits``: +inf below 8 relevant items, -inf without any, else at
    least every relevant item's key (float32 BLAS) of the row."""
    x, y = gaussian(91, n=150, dim=7, n_classes=6, singletons=2)
    y = np.asarray(y)
    y[:5] = "tiny"
    prep = prepare(x, y, metric="l2")
    R, size = symmetric.heap_sizes(prep, True)
    margin = base.key_margins(prep)
    lim = symmetric.ret_limits(prep, R, size, margin)
    assert np.all(lim[R == 0] == -np.inf)
    assert np.all(lim[(R > 0) & (R < 8)] == np.inf)
    for i in np.nonzero(R >= 8)[0]:
        s, e = prep.class_start[prep.q_class[i]], prep.class_end[prep.q_class[i]]
        cols = np.delete(np.arange(s, e), i - s)
        rel = base.exact_keys(prep, np.full(len(cols), i), cols)
        assert rel.max() + margin[i] <= lim[i]
