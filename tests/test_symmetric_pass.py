"""The counts pass over the upper triangle (engines/symmetric.py).

Every row a query and a gallery item: the counts pass reads each product
once and counts it for both its queries, with per-row retrieval heaps kept
across strips. A query/gallery split whose queries are all gallery items:
both passes read the upper triangle of the queries and the gallery-only
columns once (``tiles.Layout``), the same bytes as full rows
(``tiles._SPLIT = False``). It must give the JSON bytes of the full-row pass
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
from opis_cli.engines import _kernels, _sym_kernels, base, symmetric, tiles
from opis_cli.prepare import prepare
from ref_compare import compare, well_conditioned


@pytest.fixture
def small_tiles(monkeypatch):
    """Small tiles, and the final ranking in ranges of 7 rows (each range a
    task of ``workers.parallel_map``, on every core)."""
    monkeypatch.setattr(base, "TILE_BYTES", 1)
    monkeypatch.setattr(symmetric, "RANK_ROWS", 7)


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
    """Not with a query that is not a gallery item, the verification view,
    offsets, or heaps above their budget; the results are the same either
    way. A split whose queries are all gallery items takes it."""
    x, y = gaussian(90, n=200, dim=6, n_classes=8)
    evaluate(x, y, is_query=np.arange(200) % 3 != 0, is_gallery=np.arange(200) % 2 == 0,
             timestamp=False)
    evaluate(x, y, verification=True, timestamp=False)
    assert spies["runs"] == 0
    evaluate(x, y, is_query=np.arange(200) % 3 != 0, timestamp=False)
    assert spies["runs"] == 1
    monkeypatch.setattr(tiles, "_SPLIT", False)
    evaluate(x, y, is_query=np.arange(200) % 3 != 0, timestamp=False)
    assert spies["runs"] == 1
    monkeypatch.setattr(tiles, "_SPLIT", True)
    monkeypatch.setattr(tiles, "SPLIT_COPY_BYTES", 67 * 6 * 4 - 1)  # 67 gallery-only rows
    evaluate(x, y, is_query=np.arange(200) % 3 != 0, timestamp=False)
    assert spies["runs"] == 1
    monkeypatch.setattr(tiles, "SPLIT_COPY_BYTES", 67 * 6 * 4)
    evaluate(x, y, is_query=np.arange(200) % 3 != 0, timestamp=False)
    assert spies["runs"] == 2
    spies["runs"] = 0
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


# ---------------------------------------------------------------- query/gallery splits
def _split_both(monkeypatch, x, y, **opts):
    """(JSON with the split's strips, JSON with full rows), and the widths of
    the gallery-only products both strip kernels saw."""
    widths = []
    real_c, real_p = _sym_kernels.count_strip, _kernels.process_strip

    def spy_c(S, S2, *a):
        widths.append(("counts", S2.shape[1]))
        return real_c(S, S2, *a)

    def spy_p(S, S2, *a):
        widths.append(("order statistic", S2.shape[1]))
        return real_p(S, S2, *a)

    monkeypatch.setattr(_sym_kernels, "count_strip", spy_c)
    monkeypatch.setattr(_kernels, "process_strip", spy_p)
    out = []
    for on in (True, False):
        monkeypatch.setattr(tiles, "_SPLIT", on)
        out.append(json.loads(evaluate(x, y, timestamp=False, **opts).to_json()))
    return out[0], out[1], widths


SPLITS = [
    # (share of queries, share of the other rows in the gallery)
    (0.5, 1.0),
    (0.3, 0.6),
    (0.9, 0.05),
]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("case", range(len(CASES)))
def test_split_strips_give_the_full_row_bytes(monkeypatch, small_tiles, two_threads, spies,
                                              seed, case):
    """Queries that are all gallery items, beside gallery-only rows: both
    passes read each product once, the same JSON as full rows (ties,
    duplicates, singletons, excluded classes, groups, both ranges)."""
    x, y = integer_rows(seed + 20, n=260 + 13 * seed, dim=3, n_classes=9)
    rng = np.random.default_rng(seed)
    q_share, g_share = SPLITS[seed]
    q = rng.random(len(y)) < q_share
    q[:3] = True
    g = q | (rng.random(len(y)) < g_share)
    g[np.nonzero(~q)[0][:2]] = True  # a gallery-only row at least
    opts = dict(CASES[case])
    if opts.pop("groups", False):
        opts["groups"] = [f"g{(i * 7) % 4}" for i in range(len(y))]
    split, full, widths = _split_both(monkeypatch, x, y, is_query=q, is_gallery=g, **opts)
    assert spies["runs"] == 1
    assert {w for _, w in widths} == {int((g & ~q).sum())}
    assert ("counts", int((g & ~q).sum())) in widths
    if "calibration_range" not in opts:
        assert ("order statistic", int((g & ~q).sum())) in widths
    assert split == full


@pytest.mark.parametrize("seed", range(2))
def test_split_strips_match_the_reference(small_tiles, two_threads, spies, seed):
    """Against the float64 reference directly (singletons, groups)."""
    metric = "l2" if seed % 2 else "cosine"

    def make(s):
        x, y = gaussian(s, n=320, dim=6, n_classes=12, singletons=3)
        q = np.arange(len(y)) % 3 != 1
        return x, y, dict(metric=metric, groups=[f"g{i % 3}" for i in range(len(y))],
                          num_thresholds=11, is_query=q)

    (x, y, opts), r = well_conditioned(make, 170 + seed, lambda case: ref.evaluate(
        case[0], case[1], **case[2]))
    res = evaluate(x, y, timestamp=False, **opts)
    assert spies["runs"] == 1
    compare(res, r, rel=1e-6)


def test_split_rows_whose_near_misses_overflow_are_ranked_again(monkeypatch, small_tiles,
                                                                two_threads, spies):
    x, y = integer_rows(6, n=420, dim=3, n_classes=10)
    x[:200] = x[200]
    q = np.arange(420) % 2 == 0
    split, full, _ = _split_both(monkeypatch, x, y, is_query=q, metric="l2",
                                 calibration_range=(0.5, 6.0))
    assert spies["again"] > 0
    assert split == full


def test_split_heap_limits_bound_every_relevant_item():
    """``ret_limits`` of a split: per query, at least the key of every
    relevant gallery item."""
    x, y = gaussian(92, n=180, dim=7, n_classes=6, singletons=2)
    q = np.arange(180) % 3 == 0
    prep = prepare(x, y, metric="cosine", is_query=q)
    R, size = symmetric.heap_sizes(prep, True)
    margin = base.key_margins(prep)
    lim = symmetric.ret_limits(prep, R, size, margin)
    assert len(lim) == len(prep.q_rows) and (R >= 8).any()
    for i in np.nonzero(R >= 8)[0]:
        c = prep.q_class[i]
        cols = np.setdiff1d(np.arange(prep.class_start[c], prep.class_end[c]), prep.self_col[i])
        rel = base.exact_keys(prep, np.full(len(cols), i), cols)
        assert rel.max() + margin[i] <= lim[i]
