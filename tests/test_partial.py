"""Typed partial results of a pass (``engines/partial.py``) and their merge,
against a naive sum written out by hand: the reduce step of the exact and
Dask engines."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from opis_cli.engines.partial import HISTOGRAMS, Part, Retrieval, merge


def _random_part(rng, C, G, K, nq, start, n, ids=None):
    rows = C if ids is None else len(ids)
    part = Part.empty(rows, G, K, None if n is None else n)
    for a in (part.class_all, part.class_pos, part.group_all, part.group_pos):
        a[...] = rng.integers(0, 9, a.shape)
    ret = None
    if n is not None:
        ret = Retrieval(rng.integers(0, 5, n), rng.random(n), rng.integers(0, 5, n),
                        rng.integers(0, 5, n))
    hists = {h: (rng.integers(0, 9, 6) if rng.random() < 0.7 else None) for h in HISTOGRAMS}
    return replace(part, start=start, ret=ret, class_ids=ids,
                   deferred=tuple((rng.random(2),) for _ in range(rng.integers(0, 3))),
                   gathered=tuple(rng.random(3) for _ in range(rng.integers(0, 3))),
                   gather_below=rng.integers(0, 9, 2),
                   ver_gathered=tuple((rng.random(1),) for _ in range(rng.integers(0, 2))),
                   **hists)


@pytest.mark.parametrize("seed", range(8))
def test_merge_is_the_naive_sum(seed):
    rng = np.random.default_rng(seed)
    C, G, K, nq = int(rng.integers(1, 6)), int(rng.integers(0, 3)), int(rng.integers(1, 5)), 20
    dask = seed % 2 == 1  # Dask tasks: class subsets, retrieval filled by the caller
    cuts = np.sort(rng.choice(np.arange(1, nq), int(rng.integers(0, 4)), replace=False))
    bounds = list(zip([0, *cuts], [*cuts, nq]))
    parts = []
    for s, e in bounds:
        ids = np.sort(rng.choice(C, int(rng.integers(1, C + 1)), replace=False)) if dask else None
        parts.append(_random_part(rng, C, G, K, nq, s, None if dask else e - s, ids))
    total = merge(parts, nq, C)
    want_all = np.zeros((C, K), np.int64)
    want_pos = np.zeros((C, K), np.int64)
    for p in parts:
        for r, c in enumerate(range(C) if p.class_ids is None else p.class_ids):
            want_all[c] += p.class_all[r]
            want_pos[c] += p.class_pos[r]
    np.testing.assert_array_equal(total.class_all, want_all)
    np.testing.assert_array_equal(total.class_pos, want_pos)
    np.testing.assert_array_equal(total.group_all, sum(p.group_all for p in parts))
    np.testing.assert_array_equal(total.gather_below, sum(p.gather_below for p in parts))
    for h in HISTOGRAMS:
        got = [getattr(p, h) for p in parts if getattr(p, h) is not None]
        if got:
            np.testing.assert_array_equal(getattr(total, h), sum(got))
        else:
            assert getattr(total, h) is None
    assert len(total.deferred) == sum(len(p.deferred) for p in parts)
    assert len(total.gathered) == sum(len(p.gathered) for p in parts)
    assert total.deferred_keys is None
    for p in parts:
        if p.ret is None:
            continue
        sl = slice(p.start, p.start + len(p.ret.ap))
        np.testing.assert_array_equal(total.ret.first_rank[sl], p.ret.first_rank)
        np.testing.assert_array_equal(total.ret.ap[sl], p.ret.ap)
    if dask:
        assert not total.ret.first_rank.any() and not total.ret.ap.any()
    # the order of the parts changes no count
    again = merge(parts[::-1], nq, C)
    np.testing.assert_array_equal(again.class_all, total.class_all)
    np.testing.assert_array_equal(again.ret.ap, total.ret.ap)


def test_merge_by_hand():
    a = replace(Part.empty(2, 0, 2, 1), start=0, deferred_keys=(np.array([0.5]),),
                win_below=np.array([1, 2]))
    a.class_all[...] = [[1, 0], [0, 2]]
    a.ret.ap[0] = 0.25
    b = replace(Part.empty(1, 0, 2, None), class_ids=np.array([1]), deferred_keys=())
    b.class_all[...] = [[5, 5]]
    m = merge([a, b], 3, 2)
    assert m.class_all.tolist() == [[1, 0], [5, 7]]
    assert m.ret.ap.tolist() == [0.25, 0.0, 0.0]
    assert m.win_below.tolist() == [1, 2] and m.rep_pos is None
    assert [k.tolist() for k in m.deferred_keys] == [[0.5]]
    # a part without float64 keys for its deferred elements: none for the merge
    assert merge([a, replace(b, deferred_keys=None)], 3, 2).deferred_keys is None
