"""The engine against the naive reference over generated inputs (Hypothesis).

``test_reference_vs_engine.py`` walks seeded inputs; here Hypothesis draws
(and shrinks) them, aiming at the cases that break engines: duplicate rows
(distance 0, ties across classes), ties at grid thresholds, singleton and
query-less classes, query/gallery splits, groups, and the option space.
Only exact inputs are drawn (small integer coordinates with ``l2``; 4-sparse
+-1 vectors with ``cosine``, whose distances are multiples of 1/4 and fall on
the grid), so every count must equal the reference and every number agree
to 1e-9 (``ref_compare.compare``); an input the reference cannot evaluate
(fewer than two evaluable classes, a degenerate range) must raise an
``OpisError``.

Budget: the Hypothesis profile of tests/conftest.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import reference as ref
from hypothesis import given
from hypothesis import strategies as st
from ref_compare import compare

from opis_cli import evaluate
from opis_cli.errors import OpisError

OPTIONS = st.fixed_dictionaries({
    "utility": st.sampled_from(["tpr-tnr", "precision-recall"]),
    "beta": st.sampled_from([0.5, 1.0, 2.0]),
    "epsilon": st.sampled_from([0.1, 0.25, 0.5, 1.0]),
    "threshold_policy": st.sampled_from(["max-mean-utility", "max-worst-utility", "far:0.05",
                                         "far:0.3"]),
})


@st.composite
def labelled_rows(draw, make_row, max_n=22):
    """(x, labels, extra): rows from ``make_row``, some duplicated; singletons; splits; groups."""
    n_classes = draw(st.integers(2, 5))
    n = draw(st.integers(n_classes + 1, max_n))
    y = list(range(n_classes)) + draw(st.lists(st.integers(0, n_classes - 1),
                                               min_size=n - n_classes, max_size=n - n_classes))
    rows = [draw(make_row) for _ in range(n)]
    for _ in range(draw(st.integers(0, 4))):  # exact copies: same class or another
        i, j = draw(st.integers(0, n - 1)), draw(st.integers(0, n - 1))
        rows[j] = rows[i]
    x = np.array(rows, dtype=np.float32)
    labels = [f"k{v}" for v in y]
    extra = {}
    split = draw(st.sampled_from(["all", "random", "disjoint"]))
    if split == "random":
        extra["is_query"] = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
        extra["is_gallery"] = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    elif split == "disjoint":  # a query set and a separate gallery
        q = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
        extra["is_query"], extra["is_gallery"] = q, ~q
    if draw(st.booleans()):
        extra["groups"] = [f"g{v % draw(st.integers(1, 3))}" for v in y] if n else None
    return x, labels, extra


INT_ROW = st.lists(st.integers(-2, 2), min_size=2, max_size=2)


@st.composite
def sparse_row(draw, dim=8):
    idx = draw(st.lists(st.integers(0, dim - 1), min_size=4, max_size=4, unique=True))
    row = [0] * dim
    for i in idx:
        row[i] = draw(st.sampled_from([-1, 1]))
    return row


def engine_matches_reference(x, labels, extra, **opts) -> None:
    try:
        r = ref.evaluate(x, labels, **extra, **opts)
        ok = r.classes.evaluated >= 2 and (r.groups is None or r.groups.evaluated >= 1)
    except (ValueError, ZeroDivisionError, IndexError):
        ok = False
    if not ok or r.classes.evaluated < 2:
        with pytest.raises(OpisError):
            evaluate(x, labels, timestamp=False, **extra, **opts)
        return
    try:
        res = evaluate(x, labels, timestamp=False, **extra, **opts)
    except OpisError as e:
        # the reference evaluates it; the engine may only refuse a block it cannot define
        assert r.groups is not None and "group" in str(e).lower(), e
        return
    compare(res, r, rel=1e-9)


@given(data=labelled_rows(INT_ROW), opts=OPTIONS,
       rng=st.sampled_from([None, (0.5, 2.5), (1.0, 3.0)]),
       k=st.sampled_from([2, 3, 5, 11]))
def test_integer_l2_engine_equals_reference(data, opts, rng, k):
    """Exact l2 distances (sqrt of integers); duplicates, ties and splits."""
    x, labels, extra = data
    engine_matches_reference(x, labels, extra, metric="l2", calibration_range=rng,
                             num_thresholds=k, **opts)


@given(data=labelled_rows(sparse_row()), opts=OPTIONS, k=st.sampled_from([2, 3, 5]))
def test_sparse_cosine_ties_on_the_grid_equal_reference(data, opts, k):
    """Cosine distances in multiples of 1/4 on a grid of multiples of 1/4: ties at thresholds."""
    x, labels, extra = data
    engine_matches_reference(x, labels, extra, metric="cosine", calibration_range=(0.25, 1.25),
                             num_thresholds=k, **opts)


@given(data=labelled_rows(INT_ROW, max_n=16), seed=st.integers(0, 2**16))
def test_row_order_does_not_change_the_consistency_numbers(data, seed):
    """Permuting rows (and their flags) leaves OPIS and every class's numbers unchanged."""
    x, labels, extra = data
    extra.pop("groups", None)
    opts = {"metric": "l2", "calibration_range": (0.5, 2.5), "num_thresholds": 5}
    try:
        a = evaluate(x, labels, timestamp=False, **extra, **opts)
    except OpisError:
        return
    p = np.random.default_rng(seed).permutation(len(x))
    pex = {k: np.asarray(v)[p] for k, v in extra.items()}
    b = evaluate(x[p], [labels[i] for i in p], timestamp=False, **pex, **opts)
    assert a.opis == b.opis and a.epsilon_opis == b.epsilon_opis
    key = [(c.label, c.positives, c.negatives, c.mean_utility, c.far_at_threshold)
           for c in a.classes.per_class]
    assert key == [(c.label, c.positives, c.negatives, c.mean_utility, c.far_at_threshold)
                   for c in b.classes.per_class]
