"""The engine (``opis_cli.evaluate``) against the naive reference in ``reference.py``.

``reference.py`` is an independent float64 brute-force reading of SPEC.md
sections 2-7; nothing here is computed by the code under test. Inputs are
seeded random data sets of several kinds:

* exact data (integer coordinates with ``l2``, or 4-sparse +-1 vectors with
  ``cosine``): every distance is exact in float32 and float64, so counts must
  agree exactly, ties abound (duplicates at distance 0, many equal distances)
  and the retrieval tie rule (equal distances ordered by gallery row) is
  checked too; numbers compared to 1e-9;
* continuous Gaussian clusters with a different spread per class: the engine
  computes distances in float32, so a pair within ~1e-6 of a grid threshold
  may legitimately land on the other side of it. Such inputs are
  ill-conditioned for a comparison at 1e-6; ``well_conditioned`` moves to the
  next seed of a fixed sequence until none is (deterministic, never skipped).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

import reference as ref
from data_gen import gaussian, integer_rows, sparse_signs
from opis_cli import evaluate
from ref_compare import compare, compare_block, options_for, well_conditioned

VECTORS = Path(__file__).parent / "data" / "vectors"


def run_both(x, labels, **opts):
    """(engine result, reference result) under the same options."""
    res = evaluate(x, labels, timestamp=False, **opts)
    r = ref.evaluate(x, labels, **opts)
    return res, r


# ---------------------------------------------------------------------------
# the reference checks itself on tiny inputs (every pair by explicit loops)
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_reference_distance_matrix_is_the_pairwise_definition(metric):
    x, _ = gaussian(5, n=25, dim=5, n_classes=3)
    np.testing.assert_allclose(ref.distance_matrix(x, metric),
                               ref.distance_matrix_loops(x, metric), rtol=0, atol=1e-12)


def test_reference_counts_are_the_pair_definition():
    """TP/FP of the reference equal a triple loop over (q, g, t) written from SPEC 3."""
    x, y = integer_rows(11, n=30, dim=2, n_classes=3)
    isq = np.arange(30) % 3 != 0
    isg = np.arange(30) % 4 != 1
    r = ref.evaluate(x, y, metric="l2", calibration_range=(0.5, 3.0), num_thresholds=6,
                     is_query=isq, is_gallery=isg)
    d = ref.distance_matrix_loops(x, "l2")
    for c in r.classes.labels:
        tp = [0] * 6
        fp = [0] * 6
        P = M = 0
        for q in range(30):
            for g in range(30):
                if q == g or not isq[q] or not isg[g] or y[q] != c:
                    continue
                P += y[g] == c
                M += y[g] != c
                for i, t in enumerate(r.thresholds):
                    if d[q, g] <= t:
                        tp[i] += y[g] == c
                        fp[i] += y[g] != c
        assert (P, M) == (r.classes.P[c], r.classes.M[c])
        assert tp == r.classes.TP[c].tolist() and fp == r.classes.FP[c].tolist()


# ---------------------------------------------------------------------------
# SPEC 9: the hand case, numbers written out
# ---------------------------------------------------------------------------
def test_spec_hand_case():
    x = np.array([[0.0], [1.0], [10.0], [13.0]])
    y = ["a", "a", "b", "b"]
    res = evaluate(x, y, metric="l2", calibration_range=(1, 3), num_thresholds=3,
                   timestamp=False)
    assert res.thresholds == (1.0, 2.0, 3.0)
    cv = res.curves
    U = dict(zip(cv.labels, cv.utility.tolist()))
    assert U == {"a": [1.0, 1.0, 1.0], "b": [0.0, 0.0, 1.0]}
    assert res.classes.mean_utility == pytest.approx([0.5, 0.5, 1.0], abs=1e-15)
    assert res.opis == pytest.approx(0.1875, abs=1e-15)
    assert res.epsilon_opis == pytest.approx(0.75, abs=1e-15)
    assert res.recommended_threshold.value == 3.0
    assert [c.label for c in res.classes.per_class] == ["b", "a"]  # worst first
    assert [c.worst for c in res.classes.per_class] == [True, False]
    compare(res, ref.evaluate(x, y, metric="l2", calibration_range=(1, 3), num_thresholds=3))


def test_retrieval_tie_goes_to_the_lower_gallery_row():
    """Two neighbours at exactly the same distance: the lower gallery row ranks first."""
    # queries: row 0 (at 0) and row 3 (at 100, whose positive row 4 is nearest);
    # rows 1 and 2 are both at distance 1 from row 0.
    x = np.array([[0.0], [1.0], [-1.0], [100.0], [103.0], [107.0]])
    isq = [True, False, False, True, False, False]
    # row 1 is a negative of row 0: R@1 misses for query 0, MAP@R (R = 1) is 0 for it
    first_b = evaluate(x, ["a", "b", "a", "c", "c", "d"], metric="l2",
                       calibration_range=(0.5, 3), is_query=isq, timestamp=False)
    assert first_b.retrieval.queries == 2
    assert first_b.retrieval.recall_at_k == {"1": 0.5, "2": 1.0, "4": 1.0, "8": 1.0}
    assert first_b.retrieval.map_at_r == 0.5
    # row 1 is a positive of row 0: both queries hit at rank 1
    first_a = evaluate(x, ["a", "a", "b", "c", "c", "d"], metric="l2",
                       calibration_range=(0.5, 3), is_query=isq, timestamp=False)
    assert first_a.retrieval.recall_at_k == {"1": 1.0, "2": 1.0, "4": 1.0, "8": 1.0}
    assert first_a.retrieval.map_at_r == 1.0
    for lab, res in ((["a", "b", "a", "c", "c", "d"], first_b),
                     (["a", "a", "b", "c", "c", "d"], first_a)):
        compare(res, ref.evaluate(x, lab, metric="l2", calibration_range=(0.5, 3),
                                  is_query=isq))


# ---------------------------------------------------------------------------
# SPEC 10: the shared test vectors
# ---------------------------------------------------------------------------
VECTOR_NAMES = sorted(p.stem for p in VECTORS.glob("*.json"))


def test_vectors_are_present():
    assert len(VECTOR_NAMES) >= 3, f"test vectors missing from {VECTORS}"
    shared = Path(__file__).resolve().parents[2] / "shared" / "vectors"
    if shared.is_dir():  # the copy must not go stale
        for p in shared.iterdir():
            assert (VECTORS / p.name).read_bytes() == p.read_bytes(), f"stale copy of {p.name}"


def vector_options(opts: dict) -> dict:
    keymap = {"metric": "metric", "calibration_range": "calibration_range", "kind": "utility",
              "beta": "beta", "n_thresholds": "num_thresholds", "epsilon": "epsilon"}
    unknown = set(opts) - set(keymap)
    assert not unknown, f"unknown option keys {unknown}"
    return {keymap[k]: (tuple(v) if isinstance(v, list) else v) for k, v in opts.items()}


@pytest.mark.parametrize("name", VECTOR_NAMES)
def test_vector(name):
    want = json.loads((VECTORS / f"{name}.json").read_text())
    with np.load(VECTORS / f"{name}.npz", allow_pickle=False) as z:
        x, labels = z["embeddings"], z["labels"].tolist()
    opts = vector_options(want.get("options", {}))
    res = evaluate(x, labels, timestamp=False, **opts)
    rel = 1e-6
    for key in ("opis", "epsilon_opis"):
        assert res.to_dict()[key] == pytest.approx(want[key], rel=rel), key
    cr = res.calibration_range
    assert cr.lower == pytest.approx(want["calibration_range"]["lower"], rel=rel, abs=1e-6)
    assert cr.upper == pytest.approx(want["calibration_range"]["upper"], rel=rel, abs=1e-6)
    rt = res.recommended_threshold
    assert rt.value == pytest.approx(want["recommended_threshold"]["value"], rel=rel)
    assert rt.mean_utility == pytest.approx(want["recommended_threshold"]["mean_utility"], rel=rel)
    assert res.classes.evaluated == want["classes"]["evaluated"]
    assert res.classes.excluded == want["classes"]["excluded"]
    got = {c.label: c.mean_utility for c in res.classes.per_class}
    assert got == pytest.approx(want["per_class_mean_utility"], rel=rel)
    if "retrieval" in want:
        w = want["retrieval"]
        assert res.retrieval.queries == w["queries"]
        assert res.retrieval.recall_at_k == pytest.approx(w["recall_at_k"], rel=rel)
        assert res.retrieval.map_at_r == pytest.approx(w["map_at_r"], rel=rel)
    # and the reference agrees with the vector (two independent readings)
    r = ref.evaluate(x, labels, **opts)
    assert r.classes.opis == pytest.approx(want["opis"], rel=rel)
    assert r.classes.epsilon_opis == pytest.approx(want["epsilon_opis"], rel=rel)
    assert r.classes.mean_utility == pytest.approx(want["per_class_mean_utility"], rel=rel)


# ---------------------------------------------------------------------------
# seeded random inputs against the reference
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_gaussian_clusters(seed, metric):
    opts = dict(options_for(seed), metric=metric)
    if seed % 3 == 2:
        opts["far_range"] = "0.02:0.3"

    def make(s):  # float64 input for every fourth seed
        return gaussian(s, singletons=s % 3, dtype=np.float64 if seed % 4 == 3 else np.float32)

    (x, y), r = well_conditioned(make, 100 * seed + (metric == "l2"),
                                 lambda case: ref.evaluate(*case, **opts))
    compare(evaluate(x, y, timestamp=False, **opts), r, rel=1e-6)


@pytest.mark.parametrize("offset", [10.0, 100.0])
def test_l2_distances_of_rows_far_from_the_origin(offset):
    """l2 is translation invariant: moving every row by the same vector changes nothing.

    Rows of norm ~offset * sqrt(D) with distances ~1: computing ||a - b|| from
    ||a||^2 + ||b||^2 - 2<a, b> in float32 loses the distance to cancellation;
    SPEC 2 defines d = ||a - b|| and SPEC 5 allows 1e-6 on the range ends.
    """
    opts = dict(metric="l2")

    def make(s):
        x, y = gaussian(s, n=100, dim=8, n_classes=5)
        return (x + np.float32(offset)).astype(np.float32), y

    (x, y), r = well_conditioned(make, 7, lambda c: ref.evaluate(*c, **opts))
    res = evaluate(x, y, timestamp=False, **opts)
    compare(res, r, rel=1e-6)


def test_group_n_counts_the_rows_of_the_group():
    """per_class ``n`` means the same in both blocks: rows carrying the label / group
    (``queries``: those of them that are queries)."""
    x, y = integer_rows(61, n=60, n_classes=4)
    groups = [f"g{i % 2}" for i in range(60)]
    isq = np.arange(60) % 3 != 0
    res = evaluate(x, y, metric="l2", groups=groups, is_query=isq, timestamp=False)
    classes = {c.label: (c.n, c.queries) for c in res.classes.per_class}
    assert classes == {k: (y.count(k), sum(1 for i in range(60) if y[i] == k and isq[i]))
                       for k in set(y)}
    groups_got = {c.label: (c.n, c.queries) for c in res.groups.per_class}
    assert groups_got == {"g0": (30, 20), "g1": (30, 20)}


@pytest.mark.parametrize("seed", range(12))
def test_integer_l2_exact(seed):
    """Exact distances, ties and duplicate rows: counts, numbers and retrieval order exact."""
    x, y = integer_rows(seed)
    opts = dict(options_for(seed), metric="l2")
    if seed % 2:
        opts["calibration_range"] = (1.0, 3.5)  # grid points on exact distances 1, 2, 3
    res, r = run_both(x, y, **opts)
    compare(res, r, rel=1e-9)


@pytest.mark.parametrize("seed", range(8))
def test_sparse_sign_cosine_exact(seed):
    """Cosine distances that are multiples of 1/4: exact ties at the grid thresholds."""
    x, y = sparse_signs(seed)
    opts = dict(options_for(seed), metric="cosine", calibration_range=(0.25, 1.25))
    if opts["num_thresholds"] in (11, 101):
        opts["num_thresholds"] = 5  # grid 0.25, 0.5, ... exactly on the distances
    res, r = run_both(x, y, **opts)
    compare(res, r, rel=1e-9)
    assert set(np.round(r.distances.ravel() * 4, 9)) <= set(range(9))  # the premise


def test_degenerate_far_range_is_an_error_in_both():
    x, y = sparse_signs(17)
    r_err = None
    try:
        ref.evaluate(x, y, metric="cosine")
    except ValueError as e:
        r_err = e
    assert r_err is not None, "premise: the FAR range of this input is degenerate"
    from opis_cli.errors import OpisError
    with pytest.raises(OpisError, match="far-range"):
        evaluate(x, y, metric="cosine")


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("split", ["disjoint", "overlapping"])
def test_query_gallery_masks(seed, split):
    rng = np.random.default_rng(seed + 500)
    x, y = integer_rows(seed + 40, n=80)
    n = len(y)
    if split == "disjoint":
        isq = rng.random(n) < 0.4
        isg = ~isq
    else:
        isq = rng.random(n) < 0.6
        isg = rng.random(n) < 0.7
        isq[~(isq | isg)] = True  # every row is used somewhere
    opts = dict(options_for(seed), metric="l2", is_query=isq, is_gallery=isg)
    res, r = run_both(x, y, **opts)
    compare(res, r, rel=1e-9)


def test_gallery_without_some_classes():
    """Classes with queries but no gallery rows have P = 0: excluded and listed."""
    x, y = integer_rows(77, n=90, n_classes=5)
    y = np.array(y)
    isg = np.isin(y, ["k0", "k1", "k2"])  # k3, k4 are query-only
    isq = np.ones(len(y), bool)
    res, r = run_both(x, y.tolist(), metric="l2", is_query=isq, is_gallery=isg)
    assert set(r.classes.excluded_labels) == {"k3", "k4"}  # premise
    compare(res, r, rel=1e-9)


def test_gallery_only_class():
    """A label present only in gallery rows is never a query class: excluded and listed."""
    x, y = integer_rows(78, n=90, n_classes=5)
    y = np.array(y)
    isq = y != "k4"
    res, r = run_both(x, y.tolist(), metric="l2", is_query=isq)
    assert "k4" in r.classes.excluded_labels  # premise
    compare(res, r, rel=1e-9)


@pytest.mark.parametrize("seed", range(6))
def test_groups(seed):
    rng = np.random.default_rng(seed + 900)
    x, y = integer_rows(seed + 60, n=100)
    groups = [f"g{v}" for v in rng.integers(0, 2 + seed % 3, size=len(y))]
    opts = dict(options_for(seed), metric="l2", groups=groups)
    if seed % 2:
        isq = rng.random(len(y)) < 0.7
        opts.update(is_query=isq, is_gallery=~isq | (rng.random(len(y)) < 0.5))
    res, r = run_both(x, y, **opts)
    assert r.groups is not None and r.groups.evaluated >= 2  # premise
    compare(res, r, rel=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_groups_gaussian_cosine(seed):
    opts = dict(options_for(seed + 1), metric="cosine")

    def make(s):
        x, y = gaussian(s, n=120)
        g = [f"site{v}" for v in np.random.default_rng(s).integers(0, 3, size=len(y))]
        return x, y, {"groups": g}

    (x, y, extra), r = well_conditioned(
        make, 40 + seed, lambda c: ref.evaluate(c[0], c[1], **c[2], **opts))
    compare(evaluate(x, y, timestamp=False, **extra, **opts), r, rel=1e-6)


@pytest.mark.parametrize("policy,where", [("far:0.0001", "first"), ("far:0.99", "last"),
                                          ("far:0.05", "inside")])
def test_far_policy_edges(policy, where):
    """far:F picks the largest grid threshold with global FAR <= F, else the smallest."""
    x, y = integer_rows(5, n=100)
    res, r = run_both(x, y, metric="l2", calibration_range=(0.5, 4.0), num_thresholds=15,
                      threshold_policy=policy)
    idx = r.classes.rec["index"]
    assert {"first": idx == 0, "last": idx == 14, "inside": 0 < idx < 14}[where]  # premise
    compare(res, r, rel=1e-9)
    assert res.recommended_threshold.requested_far == float(policy[4:])


def test_epsilon_one_means_no_rest():
    x, y = integer_rows(8, n=60)
    res, r = run_both(x, y, metric="l2", epsilon=1.0)
    assert r.classes.epsilon_opis == 0.0 and len(r.classes.worst) == r.classes.evaluated
    compare(res, r, rel=1e-9)


def test_tiny_epsilon_still_takes_one_class():
    x, y = integer_rows(9, n=60)
    res, r = run_both(x, y, metric="l2", epsilon=1e-6)
    assert len(r.classes.worst) == 1
    compare(res, r, rel=1e-9)


def test_far_range_order_statistic_is_exact_ceil():
    """t(F) is the ceil(F*M)-th smallest negative distance, F*M computed exactly:
    F = 0.07 and M = 300 select the 21st (0.07 * 300 == 21.000000000000004 in binary
    floating point, whose ceil would be 22)."""
    rng = np.random.default_rng(3)
    x = rng.choice(1000, size=50, replace=False).astype(np.float32)[:, None]
    y = [f"c{i % 4}" for i in range(10)] + [f"c{i % 4}" for i in range(40)]
    isq = np.arange(50) < 10  # 10 queries, 40 gallery rows (10 per class): M = 10 * 30
    isg = ~isq
    M = 300
    assert math.ceil(0.07 * M) == 22 and ref.exact_ceil(0.07, M) == 21  # the trap
    res, r = run_both(x, y, metric="l2", far_range=(0.07, 0.5), is_query=isq, is_gallery=isg)
    d = r.distances
    negs = np.sort([d[q, g] for q in range(10) for g in range(10, 50) if y[q] != y[g]])
    assert len(negs) == M and r.lower == negs[20] and negs[20] < negs[21]  # premise
    compare(res, r, rel=1e-9)


def test_epsilon_count_is_exact_ceil():
    """|W| = ceil(epsilon * C) computed exactly: 0.14 * 50 classes is 7, although
    0.14 * 50 == 7.000000000000001 in binary floating point (whose ceil is 8)."""
    rng = np.random.default_rng(4)
    y = [f"c{i:02d}" for i in range(50) for _ in range(3)]
    x = rng.integers(-3, 4, size=(150, 3)).astype(np.float32) + np.repeat(
        rng.integers(-4, 5, size=(50, 3)), 3, axis=0)
    res, r = run_both(x, y, metric="l2", epsilon=0.14, calibration_range=(1.0, 4.0))
    assert math.ceil(0.14 * 50) == 8  # the trap
    assert r.classes.evaluated == 50 and len(r.classes.worst) == 7  # premise
    compare(res, r, rel=1e-9)


# ---------------------------------------------------------------------------
# a larger randomized check
# ---------------------------------------------------------------------------
def test_larger_random_cosine_far_range():
    """N = 2000, D = 32, 100 classes, cosine, FAR range, default grid.

    With ~4M pairs some distances lie within float32 rounding of a grid
    threshold, so each engine count is checked against the exact interval the
    reference allows (pairs with d <= t - delta are surely accepted, d <= t +
    delta possibly); everything downstream of the counts is then checked
    against the reference computed from the engine's counts (exactly the
    SPEC 4-6 arithmetic), and against the reference's own counts to 1e-6.
    """
    x, y = gaussian(2024, n=2000, dim=32, n_classes=100)
    res = evaluate(x, y, metric="cosine", timestamp=False)
    r = ref.evaluate(x, y, metric="cosine")
    assert r.classes.evaluated == 100
    delta = 2e-6
    cr = res.calibration_range
    assert abs(cr.lower - r.lower) <= 1e-6 and abs(cr.upper - r.upper) <= 1e-6  # SPEC 5
    t = np.asarray(res.thresholds)
    lab = np.array(y)
    same = lab[:, None] == lab[None, :]
    every = np.ones(len(y), bool)
    pos, neg = ref.pair_lists(r.distances, y, same, every, every)
    cv = res.curves
    assert list(cv.labels) == r.classes.labels
    for i, k in enumerate(cv.labels):
        for counts, dists in ((cv.tp[i], np.sort(pos[k])), (cv.fp[i], np.sort(neg[k]))):
            surely = np.searchsorted(dists, t - delta, side="right")
            possibly = np.searchsorted(dists, t + delta, side="right")
            assert np.all((surely <= counts) & (counts <= possibly)), f"class {k} counts"
    # downstream of the counts: the reference arithmetic on the engine's counts
    opts = dict(utility="tpr-tnr", beta=1.0, epsilon=0.1, policy="max-mean-utility",
                n_rows={k: y.count(k) for k in set(y)}, n_queries={k: y.count(k) for k in set(y)})
    rb = ref.block_from_counts(
        y, dict(zip(cv.labels, cv.positives.tolist())), dict(zip(cv.labels, cv.negatives.tolist())),
        dict(zip(cv.labels, cv.tp)), dict(zip(cv.labels, cv.fp)), t, **opts)
    rb.recall_at_1 = r.classes.recall_at_1
    compare_block(res.classes, rb, res.thresholds, 1e-9, "classes (engine counts)", 1e-12)
    # and the reference's own numbers: a count moved by rounding shifts a class's
    # utility by ~1/P at one of 101 thresholds, a few 1e-6 of OPIS at most
    assert res.opis == pytest.approx(r.classes.opis, rel=1e-4)
    assert res.epsilon_opis == pytest.approx(r.classes.epsilon_opis, rel=1e-4)
    np.testing.assert_allclose(res.classes.mean_utility, r.classes.ubar, rtol=1e-5)
    assert [c.label for c in res.classes.per_class][:10] == r.classes.order[:10]
    assert res.recommended_threshold.index == r.classes.rec["index"]
    moved = sum(int((cv.tp[i] != r.classes.TP[k]).sum() + (cv.fp[i] != r.classes.FP[k]).sum())
                for i, k in enumerate(cv.labels))
    assert moved <= 20, f"{moved} (class, threshold) counts differ from exact float64 counts"
    # retrieval: continuous data, no exact ties
    assert res.retrieval.queries == r.retrieval["queries"] == 2000
    assert res.retrieval.recall_at_k == pytest.approx(r.retrieval["recall_at_k"], abs=1e-12)
    assert res.retrieval.map_at_r == pytest.approx(r.retrieval["map_at_r"], rel=1e-9)


# ---------------------------------------------------------------------------
# invariances: the numbers do not depend on how the work is split or ordered
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("rows", [1, 2, 3, 17])
@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_block_size_does_not_change_the_result(metric, rows):
    """Blocks of ``rows`` gallery rows (4 bytes a distance) vs the default: same JSON bytes."""
    x, y = gaussian(31, n=150, dim=8, n_classes=6)
    groups = [f"g{i % 3}" for i in range(len(y))]
    n = len(y)
    default = evaluate(x, y, groups=groups, metric=metric, timestamp=False)
    small = evaluate(x, y, groups=groups, metric=metric, block_bytes=4 * n * rows,
                     timestamp=False)
    assert small.calibration_range == default.calibration_range
    assert small.to_json() == default.to_json()


def test_thread_count_does_not_change_the_result():
    import numba

    x, y = gaussian(32, n=180, dim=8, n_classes=7)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = evaluate(x, y, timestamp=False).to_json()
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = evaluate(x, y, timestamp=False).to_json()
    finally:
        numba.set_num_threads(before)
    assert one == two


def _without_retrieval(res):
    d = res.to_dict()
    d.pop("retrieval")
    d.pop("provenance")
    d.pop("distance_histogram", None)
    for block in [d] + ([d["groups"]] if "groups" in d else []):
        for c in block["per_class"]:
            c.pop("recall_at_1")
    return d


@pytest.mark.parametrize("kind", ["integer-l2", "sparse-cosine"])
def test_row_order_does_not_change_the_consistency_numbers(kind):
    """Exact data, rows permuted: everything but neighbour order is identical."""
    if kind == "integer-l2":
        x, y = integer_rows(41, n=100)
        opts = dict(metric="l2")
    else:
        x, y = sparse_signs(41, n=100)
        opts = dict(metric="cosine", calibration_range=(0.25, 1.25), num_thresholds=9)
    groups = [f"g{i % 3}" for i in range(len(y))]
    perm = np.random.default_rng(0).permutation(len(y))
    a = evaluate(x, y, groups=groups, timestamp=False, **opts)
    b = evaluate(x[perm], [y[i] for i in perm], groups=[groups[i] for i in perm],
                 timestamp=False, **opts)
    assert _without_retrieval(a) == _without_retrieval(b)
    # retrieval on the permuted rows is what the reference says for that order
    r = ref.evaluate(x[perm], [y[i] for i in perm], **opts)
    assert b.retrieval.queries == r.retrieval["queries"]
    assert b.retrieval.recall_at_k == pytest.approx(r.retrieval["recall_at_k"], rel=1e-12)
    assert b.retrieval.map_at_r == pytest.approx(r.retrieval["map_at_r"], rel=1e-12)


def test_row_order_gaussian():
    x, y = gaussian(43, n=140, dim=6, n_classes=6)
    perm = np.random.default_rng(1).permutation(len(y))
    a = evaluate(x, y, timestamp=False)
    b = evaluate(x[perm], [y[i] for i in perm], timestamp=False)
    assert b.opis == pytest.approx(a.opis, rel=1e-9)
    assert b.epsilon_opis == pytest.approx(a.epsilon_opis, rel=1e-9)
    assert b.thresholds == pytest.approx(a.thresholds, abs=1e-7)
    assert b.recommended_threshold.index == a.recommended_threshold.index
    assert [c.label for c in b.classes.per_class] == [c.label for c in a.classes.per_class]
    # no ties in continuous data: the neighbours do not change either
    assert b.retrieval.recall_at_k == pytest.approx(a.retrieval.recall_at_k, rel=1e-12)
    assert b.retrieval.map_at_r == pytest.approx(a.retrieval.map_at_r, rel=1e-12)


def test_relabelling_classes_changes_only_the_labels():
    x, y = integer_rows(44, n=100, n_classes=6)
    # a consistent renaming that also reverses the string order of the labels
    names = sorted(set(y))
    rename = {old: f"z{len(names) - i:02d}" for i, old in enumerate(names)}
    a = evaluate(x, y, metric="l2", timestamp=False)
    b = evaluate(x, [rename[v] for v in y], metric="l2", timestamp=False)
    assert b.opis == pytest.approx(a.opis, rel=1e-12)
    assert b.epsilon_opis == pytest.approx(a.epsilon_opis, rel=1e-12)
    assert b.thresholds == a.thresholds
    assert b.recommended_threshold.index == a.recommended_threshold.index
    assert b.retrieval.recall_at_k == a.retrieval.recall_at_k
    assert b.retrieval.map_at_r == pytest.approx(a.retrieval.map_at_r, rel=1e-12)
    pa = {rename[c.label]: c for c in a.classes.per_class}
    for c in b.classes.per_class:
        o = pa[c.label]
        assert (c.n, c.positives, c.negatives) == (o.n, o.positives, o.negatives)
        assert c.mean_utility == pytest.approx(o.mean_utility, rel=1e-12)
        assert c.far_at_threshold == o.far_at_threshold
    # integer labels are compared as strings
    ints = {old: i for i, old in enumerate(names)}
    c = evaluate(x, [ints[v] for v in y], metric="l2", timestamp=False)
    assert c.opis == pytest.approx(a.opis, rel=1e-12)
    assert {x.label for x in c.classes.per_class} == {str(i) for i in range(len(names))}
