"""The approximate (knn) engine against the exact engine.

Two claims are checked, each on the sample data and on seeded synthetic data:

* when K covers the gallery nothing is unseen, and the result document is
  byte-identical to the exact engine's (apart from provenance);
* with a small K the reported bounds hold: the exact engine's per-class false
  positive counts (at the same thresholds) lie between the knn engine's lower
  and upper bounds, the truncation it reports matches a brute-force count, and
  a FAR-defined range it reports is never below the exact one.

Expected values come from the exact engine or from a brute-force numpy
computation in this file, never from the knn engine itself.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

import opis_cli
from opis_cli.cli import main
from opis_cli.engines.base import GridSpec
from opis_cli.engines.exact import ExactEngine
from opis_cli.engines.knn import ApproximationWarning, KnnEngine
from opis_cli.errors import ConfigError
from opis_cli.io import read_dataset
from result_docs import without_provenance as _doc
from opis_cli.prepare import prepare

REPO = Path(__file__).resolve().parents[1]
WEAK = REPO / "sample_data" / "digits_weak.parquet"

# most runs here truncate on purpose; the warning itself is tested below
pytestmark = pytest.mark.filterwarnings("ignore::opis_cli.engines.knn.ApproximationWarning")


@pytest.fixture(scope="module")
def digits():
    ds = read_dataset(str(WEAK), group_column="group")
    return ds.embeddings, ds.labels, ds.groups


def _synthetic(n=1500, d=16, classes=30, seed=0, split=False):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, d))
    y = rng.integers(0, classes, n)
    spread = rng.uniform(0.5, 1.5, classes)
    x = (centres[y] + spread[y, None] * rng.standard_normal((n, d))).astype(np.float32)
    groups = np.array(["g%d" % (v % 4) for v in rng.integers(0, 8, n)], dtype=object)
    is_query = is_gallery = None
    if split:  # a third are queries only, a third gallery only, a third both
        part = rng.integers(0, 3, n)
        is_query, is_gallery = part != 1, part != 0
    return x, y.astype(str), groups, is_query, is_gallery


# --------------------------------------------------------- K covers the gallery


@pytest.mark.parametrize("metric", ["cosine", "l2"])
@pytest.mark.parametrize("explicit", [False, True])
def test_k_covering_gallery_equals_exact_on_sample_data(digits, metric, explicit):
    x, y, g = digits
    kw = dict(metric=metric, groups=g, group_column="group")
    if explicit:
        kw["calibration_range"] = (0.05, 0.6) if metric == "cosine" else (10.0, 40.0)
    exact = opis_cli.evaluate(x, y, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ApproximationWarning)  # nothing unseen: no warning
        knn = opis_cli.evaluate(x, y, engine=KnnEngine(k=len(y) - 1), **kw)
    assert _doc(knn) == _doc(exact)
    assert knn.provenance["engine"] == "knn"


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_k_covering_gallery_equals_exact_with_query_gallery_split(metric):
    x, y, g, q, gal = _synthetic(split=True, seed=3)
    kw = dict(metric=metric, groups=g, is_query=q, is_gallery=gal, far_range=(0.02, 0.2),
              num_thresholds=33, utility="precision-recall")
    exact = opis_cli.evaluate(x, y, **kw)
    # queries outside the gallery have every gallery row as a neighbour: K = ng
    knn = opis_cli.evaluate(x, y, engine=KnnEngine(k=int(gal.sum()), block_bytes=2**16), **kw)
    assert _doc(knn) == _doc(exact)


# ----------------------------------------------------------------- small K


def _brute_kth(prep, k):
    """Distance of each query's k-th nearest non-self gallery row (float64)."""
    xq = prep.xq.astype(np.float64)
    xg = prep.xg.astype(np.float64)
    if prep.metric == "cosine":
        d = 1.0 - xq @ xg.T
    else:
        d = np.sqrt(np.maximum((xq ** 2).sum(1)[:, None] + (xg ** 2).sum(1)[None, :]
                               - 2 * xq @ xg.T, 0))
    has = prep.self_col >= 0
    d[np.nonzero(has)[0], prep.self_col[has]] = np.inf
    return np.sort(d, axis=1)[:, k - 1]


# (data, metric, K, FAR range): each K truncates many queries inside the range
CASES = [("digits", "cosine", 60, (0.001, 0.005)), ("digits", "l2", 150, (0.002, 0.02)),
         ("synthetic", "cosine", 40, (0.001, 0.005)), ("synthetic", "l2", 60, (0.001, 0.005))]


@pytest.mark.parametrize("data,metric,k,far", CASES)
def test_exact_counts_lie_within_reported_bounds(digits, data, metric, k, far):
    if data == "digits":
        x, y, g = digits
    else:
        x, y, g, _, _ = _synthetic(n=2000, seed=1)
    prep = prepare(x, y, metric=metric, groups=g)
    out = KnnEngine(k=k, index="flat").run(prep, GridSpec(far_range=far))
    lo, hi = float(out.thresholds[0]), float(out.thresholds[-1])
    exact = ExactEngine().run(prep, GridSpec(calibration_range=(lo, hi)))
    np.testing.assert_array_equal(exact.thresholds, out.thresholds)
    fp_exact = exact.class_fp
    # positives are computed exactly
    np.testing.assert_array_equal(out.class_tp, exact.class_tp)
    np.testing.assert_array_equal(out.group_tp, exact.group_tp)
    # the bounds hold for every class and threshold ...
    assert (out.class_fp_lower <= fp_exact).all()
    assert (fp_exact <= out.class_fp_upper).all()
    P, M = prep.class_pair_counts()
    ev = (P > 0) & (M > 0)
    far_exact = fp_exact[ev].sum(0) / M[ev].sum()
    assert (out.far_lower <= far_exact).all() and (far_exact <= out.far_upper).all()
    # ... and are not vacuous: this K truncates queries, and the seen counts
    # really miss pairs somewhere (so the test above could fail)
    assert out.truncated[-1] > 0
    assert (fp_exact > out.class_fp).any()
    # the reported (seen) FAR lies between the bounds; it is a lower bound of
    # the exact one up to float32 rounding of pairs within delta of a threshold
    seen = out.class_fp[ev].sum(0) / M[ev].sum()
    assert (out.far_lower <= seen).all() and (seen <= out.far_upper).all()


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_truncated_queries_match_brute_force(digits, metric):
    x, y, g = digits
    prep = prepare(x, y, metric=metric)
    k = 150
    out = KnnEngine(k=k, index="flat").run(prep, GridSpec(far_range=(0.002, 0.02)))
    kth = _brute_kth(prep, k)
    P, M = prep.class_pair_counts()
    row_eval = ((P > 0) & (M > 0))[prep.q_class]
    for j in (0, len(out.thresholds) // 2, len(out.thresholds) - 1):
        t = out.thresholds[j]
        assert not (np.abs(kth - t) < 1e-6).any()  # no borderline query here
        # every digit query has far more than k negatives, so none is fully seen
        expected = int((row_eval & (kth <= t)).sum())
        assert int(out.truncated[j]) == expected
    assert out.notes["queries_truncated_at_upper"] == int(out.truncated[-1])


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_far_range_from_seen_negatives_bounds_exact_range(digits, metric):
    x, y, _ = digits
    prep = prepare(x, y, metric=metric)
    spec = GridSpec(far_range=(0.001, 0.005))
    exact = ExactEngine().run(prep, spec)
    for k in (60, 400):
        out = KnnEngine(k=k, index="flat").run(prep, spec)
        fr = out.notes["far_range"]
        for i, flag in ((0, "exact_lower"), (-1, "exact_upper")):
            assert out.thresholds[i] >= exact.thresholds[i] - 1e-6
            if fr[flag]:
                assert out.thresholds[i] == pytest.approx(exact.thresholds[i], abs=1e-6)
    assert fr["exact_lower"] and fr["exact_upper"]  # K = 400 sees every negative below


def test_warns_when_truncation_matters_and_says_how_much(digits):
    x, y, _ = digits
    with pytest.warns(ApproximationWarning, match=r"lower\s+bound.*at most") as rec:
        r = opis_cli.evaluate(x, y, engine=KnnEngine(k=60, index="flat"),
                              far_range=(0.001, 0.005))
    assert any("Raise --k" in str(w.message) for w in rec)
    assert r.provenance["engine"] == "knn"


@pytest.mark.parametrize("k,far,says", [
    (10, (0.01, 0.1), "can see at most 17970 of"),  # 10 per query: known before searching
    (60, (0.002, 0.02), "saw"),  # most of the 60 neighbours are positives
])
def test_far_range_out_of_reach_is_a_config_error(digits, k, far, says):
    x, y, _ = digits
    with pytest.raises(ConfigError, match=rf"out of reach.*--k {k}: the search {says}"):
        opis_cli.evaluate(x, y, engine=KnnEngine(k=k, index="flat"), far_range=far)


@pytest.mark.parametrize("index", ["hnsw", "ivf"])
def test_approximate_indexes_keep_a_valid_lower_bound_and_are_deterministic(digits, index):
    x, y, g = digits
    prep = prepare(x, y, groups=g)
    spec = GridSpec(far_range=(0.001, 0.005))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ApproximationWarning)
        out = KnnEngine(k=60, index=index).run(prep, spec)
        again = KnnEngine(k=60, index=index).run(prep, spec)
    for name in ("class_tp", "class_fp", "class_fp_lower", "class_fp_upper", "first_rank",
                 "ap_at_r"):
        np.testing.assert_array_equal(getattr(out, name), getattr(again, name))
    exact = ExactEngine().run(prep, GridSpec(calibration_range=(out.thresholds[0],
                                                                out.thresholds[-1])))
    # seen pairs are real pairs: the lower bound holds whatever the index missed
    assert (out.class_fp_lower <= exact.class_fp).all()
    np.testing.assert_array_equal(out.class_tp, exact.class_tp)
    smp = out.notes["sample"]
    assert 0.0 < smp["index_recall"] <= 1.0 and smp["rows"] > 0


def test_flat_index_check_reports_no_missed_pairs(digits):
    x, y, _ = digits
    prep = prepare(x, y)
    out = KnnEngine(k=60, index="flat").run(prep, GridSpec(far_range=(0.001, 0.005)))
    assert out.notes["sample"]["missed_nearer_than_kth"] == 0
    assert out.notes["sample"]["index_recall"] == 1.0


def test_retrieval_from_neighbours_matches_exact(digits):
    # R@k needs only the 8 nearest: a flat search with K >= 8 gets it exactly
    x, y, _ = digits
    kw = dict(calibration_range=(0.05, 0.3))
    exact = opis_cli.evaluate(x, y, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ApproximationWarning)
        knn = opis_cli.evaluate(x, y, engine=KnnEngine(k=200, index="flat"), **kw)
    assert knn.retrieval.recall_at_k == exact.retrieval.recall_at_k
    # MAP@R counts only positives among the K nearest: a lower bound (up to
    # the order of pairs whose float32 distances differ by rounding)
    assert knn.retrieval.map_at_r <= exact.retrieval.map_at_r + 1e-6


# ---------------------------------------------------------------------- CLI


def test_cli_knn_equals_exact_when_k_covers_gallery(tmp_path, capsys):
    a, b = tmp_path / "exact.json", tmp_path / "knn.json"
    assert main(["evaluate", str(WEAK), "--json", str(a), "-q"]) == 0
    assert main(["evaluate", str(WEAK), "--engine", "knn", "--k", "5000", "--index", "flat",
                 "--json", str(b), "-q"]) == 0
    da, db = json.loads(a.read_text()), json.loads(b.read_text())
    assert db["provenance"]["engine"] == "knn"
    da.pop("provenance"), db.pop("provenance")
    assert da == db


@pytest.mark.parametrize("args,needle", [
    (["--k", "0"], "--k must be at least 1"),
    (["--index", "annoy"], "--index 'annoy'"),
])
def test_cli_knn_bad_options_exit_2(args, needle, capsys):
    assert main(["evaluate", str(WEAK), "--engine", "knn", *args, "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and needle in err and err.count("\n") == 1
