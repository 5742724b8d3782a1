"""SPEC 3's ``--min-class-rows``, SPEC 6's R-Precision and the low-evidence flag,
against the naive reference (``reference.py``) and hand-worked cases.

Inputs: small-integer ``l2`` rows (every distance exact in float32 and
float64, many ties and duplicate rows) with class sizes chosen so that every
``--min-class-rows`` N of the tests excludes some classes and keeps others,
with groups and query/gallery flags.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import opis_cli
import reference as ref
from opis_cli.cli import main
from opis_cli.engines.knn import KnnEngine
from opis_cli.engines.sampled import SampledEngine
from opis_cli.errors import ConfigError, InputError
from ref_compare import compare, options_for
from result_docs import without_provenance as _doc

#: rows per class: singletons, pairs, small and larger classes
SIZES = (1, 2, 2, 3, 3, 4, 5, 6, 8, 11, 15, 20)


def sized_rows(seed: int, sizes=SIZES, dim: int = 3):
    """Integer rows around one centre per class, with the class sizes ``sizes``
    (shuffled), a few exact duplicates, and string labels."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(sizes)), sizes)
    centres = rng.integers(-3, 4, size=(len(sizes), dim))
    x = centres[y] + rng.integers(-2, 3, size=(len(y), dim))
    for _ in range(4):  # duplicates of other rows (same or other class): ties at 0
        i, j = rng.integers(0, len(y), 2)
        x[i] = x[j]
    order = rng.permutation(len(y))
    return x[order].astype(np.float32), [f"k{v}" for v in y[order]]


def run_both(x, labels, **opts):
    return opis_cli.evaluate(x, labels, timestamp=False, **opts), ref.evaluate(x, labels, **opts)


# ---------------------------------------------------------------------------
# hand-worked cases
# ---------------------------------------------------------------------------
def test_hand_case_small_class_is_excluded_but_stays_a_negative():
    # a: 2 rows, b: 3 rows, c: 3 rows on a line (l2)
    x = np.array([[0.0], [1.0], [10.0], [13.0], [14.0], [20.0], [21.0], [22.0]])
    y = ["a", "a", "b", "b", "b", "c", "c", "c"]
    res = opis_cli.evaluate(x, y, metric="l2", calibration_range=(1, 3), num_thresholds=3,
                            min_class_rows=3, timestamp=False)
    assert res.classes.evaluated == 2 and res.classes.excluded_labels == ("a",)
    per = {c.label: c for c in res.classes.per_class}
    assert set(per) == {"b", "c"}
    # b's 3 queries see 2 positives each and 5 negatives each: a's 2 rows count
    assert (per["b"].positives, per["b"].negatives) == (6, 15)
    assert (per["c"].positives, per["c"].negatives) == (6, 15)
    # retrieval only over b's and c's queries (a is in no average): 6 queries,
    # each of whose nearest row is of its own class (10 -> 13 at d 3, a's 1 at d 9)
    assert res.retrieval.queries == 6
    assert res.retrieval.recall_at_k[1] == 1.0
    compare(res, ref.evaluate(x, y, metric="l2", calibration_range=(1, 3), num_thresholds=3,
                              min_class_rows=3))
    # the default keeps a
    full = opis_cli.evaluate(x, y, metric="l2", calibration_range=(1, 3), num_thresholds=3,
                             timestamp=False)
    assert full.classes.evaluated == 3 and full.retrieval.queries == 8


def test_hand_case_r_precision():
    # a at 0, 2, 5; b at 1, 6 (l2). Worked from SPEC 6:
    #   query 0 (a, R=2): 1 (b, d1), 2 (a, d2)        -> 1/2; AP@R = (1/2)/2
    #   query 2 (a, R=2): 1 (b, d1), 0 (a, d2)        -> 1/2; AP@R = 1/4
    #   query 5 (a, R=2): 6 (b, d1), 2 (a, d3)        -> 1/2; AP@R = 1/4
    #   query 1 (b, R=1): 0 and 2 (a, d1, tie)        -> 0
    #   query 6 (b, R=1): 5 (a, d1)                   -> 0
    x = np.array([[0.0], [2.0], [5.0], [1.0], [6.0]])
    y = ["a", "a", "a", "b", "b"]
    res = opis_cli.evaluate(x, y, metric="l2", calibration_range=(1, 3), timestamp=False)
    assert res.retrieval.r_precision == pytest.approx(0.3, abs=1e-15)
    assert res.retrieval.map_at_r == pytest.approx(0.15, abs=1e-15)
    r = ref.evaluate(x, y, metric="l2", calibration_range=(1, 3))
    assert r.retrieval["r_precision"] == pytest.approx(0.3, abs=1e-15)
    d = json.loads(res.to_json())["retrieval"]
    assert list(d) == ["recall_at_k", "map_at_r", "r_precision", "queries"]
    assert d["r_precision"] == pytest.approx(0.3, abs=1e-15)
    assert res.gate_metrics()["r_precision"] == pytest.approx(0.3, abs=1e-15)


def test_r_precision_tie_goes_to_the_lower_gallery_row():
    # query 0 (a, R=1) has rows 1 (b) and 2 (a) both at distance 1: row 1 ranks first
    x = np.array([[0.0], [1.0], [-1.0], [100.0], [103.0], [107.0]])
    isq = [True, False, False, True, False, False]
    lab = ["a", "b", "a", "c", "c", "d"]
    res = opis_cli.evaluate(x, lab, metric="l2", calibration_range=(0.5, 3), is_query=isq,
                            timestamp=False)
    assert res.retrieval.r_precision == 0.5  # query 0: 0 of 1; query 3: 1 of 1
    swapped = ["a", "a", "b", "c", "c", "d"]
    res = opis_cli.evaluate(x, swapped, metric="l2", calibration_range=(0.5, 3), is_query=isq,
                            timestamp=False)
    assert res.retrieval.r_precision == 1.0


def test_low_evidence_rule_by_hand():
    # sizes 3 (3 queries: low), 4 (4 queries: low), 5 (5 queries, 20 positives: not)
    x = np.arange(12, dtype=np.float32)[:, None] * np.float32(10) + np.float32(1)
    y = ["s"] * 3 + ["m"] * 4 + ["l"] * 5
    x = x + np.array([0, 1, 2, 0, 1, 2, 3, 0, 1, 2, 3, 4], np.float32)[:, None]
    res = opis_cli.evaluate(x, y, metric="l2", timestamp=False)
    flags = {c.label: c.low_evidence for c in res.classes.per_class}
    assert flags == {"s": True, "m": True, "l": False}
    per = json.loads(res.to_json())["per_class"]
    assert {p["label"]: p["low_evidence"] for p in per} == flags
    frame = res.per_class_frame()
    assert dict(zip(frame["label"], frame["low_evidence"])) == flags
    # 5 queries but only 5 positive pairs (one gallery positive each): low
    isg = np.ones(12, bool)
    isg[[8, 9, 10, 11]] = False  # l keeps one gallery row (7)
    res = opis_cli.evaluate(x, y, metric="l2", is_gallery=isg, timestamp=False)
    lc = next(c for c in res.classes.per_class if c.label == "l")
    assert (lc.queries, lc.positives, lc.low_evidence) == (5, 4, True)


# ---------------------------------------------------------------------------
# the engine against the reference, several N, groups and query/gallery flags
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("min_rows", [2, 3, 4, 6, 9])
@pytest.mark.parametrize("seed", range(3))
def test_exact_engine_matches_the_reference(seed, min_rows):
    x, y = sized_rows(seed)
    rng = np.random.default_rng(seed + 11)
    opts = dict(options_for(seed + min_rows), metric="l2", min_class_rows=min_rows,
                groups=[f"g{v}" for v in rng.integers(0, 4, len(y))])
    if seed % 2:
        isq = rng.random(len(y)) < 0.7
        opts.update(is_query=isq, is_gallery=~isq | (rng.random(len(y)) < 0.5))
    res, r = run_both(x, y, **opts)
    # premises: N excludes some classes by size alone, and keeps at least two
    small = {k for k, n in r.classes.n.items() if n < min_rows}
    assert small <= set(r.classes.excluded_labels)
    assert r.classes.evaluated >= 2
    compare(res, r, rel=1e-9)
    opts_json = json.loads(res.to_json())["options"]
    assert opts_json.get("min_class_rows") == (min_rows if min_rows != 2 else None)


def test_min_class_rows_changes_the_far_range_order_statistic():
    """t(F) is over the negatives of evaluated classes only (SPEC 5)."""
    x, y = sized_rows(5)
    a, r2 = run_both(x, y, metric="l2")
    b, r6 = run_both(x, y, metric="l2", min_class_rows=6)
    assert r2.far_ranks != r6.far_ranks  # premise: M shrinks
    compare(a, r2)
    compare(b, r6)


@pytest.mark.parametrize("min_rows", [3, 6])
def test_group_rows_decide_for_groups(min_rows):
    x, y = sized_rows(8)
    groups = ["big"] * (len(y) - 8) + ["tiny"] * 3 + ["small"] * 5
    res, r = run_both(x, y, metric="l2", groups=groups, min_class_rows=min_rows)
    excluded = set(res.groups.excluded_labels)
    assert ("tiny" in excluded) == (min_rows > 3) and ("small" in excluded) == (min_rows > 5)
    compare(res, r)


@pytest.mark.parametrize("min_rows", [2, 4, 7])
def test_knn_covering_the_gallery_equals_exact(min_rows):
    x, y = sized_rows(21)
    kw = dict(metric="l2", min_class_rows=min_rows, timestamp=False,
              groups=[f"g{i % 3}" for i in range(len(y))])
    exact = opis_cli.evaluate(x, y, **kw)
    knn = opis_cli.evaluate(x, y, engine=KnnEngine(k=len(y) - 1), **kw)
    assert _doc(knn) == _doc(exact)
    compare(exact, ref.evaluate(x, y, metric="l2", min_class_rows=min_rows,
                                groups=kw["groups"]))


@pytest.mark.parametrize("min_rows", [2, 5])
def test_sampled_drawing_every_row_equals_exact(min_rows):
    x, y = sized_rows(31)
    n = len(y)
    kw = dict(metric="l2", min_class_rows=min_rows, timestamp=False,
              calibration_range=(1.0, 4.0), is_query=np.arange(n) % 5 != 0)
    exact = opis_cli.evaluate(x, y, **kw)
    got = opis_cli.evaluate(x, y, engine=SampledEngine(negatives_per_query=n,
                                                       retrieval_queries=n), **kw)
    doc = json.loads(_doc(got))
    doc.pop("estimate")  # the sampled engine's own block; every other number is exact
    assert json.dumps(doc, sort_keys=True) == _doc(exact)
    assert got.retrieval.r_precision == exact.retrieval.r_precision
    assert "r_precision" in got.estimate.intervals
    lo, hi = got.estimate.intervals["r_precision"]
    assert lo <= got.retrieval.r_precision <= hi


def test_r_precision_on_gaussian_clusters_matches_the_reference():
    from data_gen import gaussian

    for seed in range(4):
        x, y = gaussian(seed + 300, n=150, singletons=2)
        res = opis_cli.evaluate(x, y, metric="cosine", timestamp=False)
        r = ref.evaluate(x, y, metric="cosine")
        # ranks can flip only between neighbours within float rounding: none here
        assert res.retrieval.r_precision == pytest.approx(r.retrieval["r_precision"], abs=1e-12)


# ---------------------------------------------------------------------------
# options, messages, CLI
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [1, 0, -3, 2.5, True, "3"])
def test_api_rejects_a_bad_minimum(bad):
    x, y = sized_rows(1)
    with pytest.raises(ConfigError, match="--min-class-rows must be an integer >= 2"):
        opis_cli.evaluate(x, y, min_class_rows=bad)


def test_too_high_a_minimum_says_so():
    x, y = sized_rows(1)
    with pytest.raises(InputError, match="at least 50 rows \\(--min-class-rows\\)"):
        opis_cli.evaluate(x, y, metric="l2", min_class_rows=50)


def test_cli_option_json_and_terminal(tmp_path, capsys):
    x, y = sized_rows(2)
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "y.txt").write_text("\n".join(y) + "\n")
    out = tmp_path / "r.json"
    code = main(["evaluate", str(tmp_path / "x.npy"), "--labels", str(tmp_path / "y.txt"),
                 "--metric", "l2", "--min-class-rows", "5", "--json", str(out)])
    assert code == 0
    d = json.loads(out.read_text())
    assert d["options"]["min_class_rows"] == 5
    assert "r_precision" in d["retrieval"]
    small = {lab for lab in set(y) if y.count(lab) < 5}
    assert small <= set(d["classes"]["excluded_labels"])
    text = capsys.readouterr()
    assert "fewer than 5 rows (--min-class-rows)" in text.out + text.err
    for bad in ("1", "2.5", "x"):
        code = main(["evaluate", str(tmp_path / "x.npy"), "--labels", str(tmp_path / "y.txt"),
                     "--min-class-rows", bad])
        assert code == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and "min-class-rows" in err


def test_default_options_block_has_no_min_class_rows():
    x, y = sized_rows(2)
    d = json.loads(opis_cli.evaluate(x, y, metric="l2", timestamp=False).to_json())
    assert "min_class_rows" not in d["options"]


# ---------------------------------------------------------------------------
# PML's call shape (query, query_labels, reference, reference_labels) and include=
# ---------------------------------------------------------------------------
def test_reference_call_shape_is_the_masks_of_the_concatenation():
    x, y = sized_rows(41)
    q, qy, r, ry = x[:40], y[:40], x[25:], y[25:]  # rows 25..39 in both: pairs at distance 0
    got = opis_cli.evaluate(q, qy, r, ry, metric="l2", timestamp=False)
    isq = np.r_[np.ones(40, bool), np.zeros(len(r), bool)]
    want = opis_cli.evaluate(np.concatenate([q, r]), qy + ry, metric="l2", is_query=isq,
                             is_gallery=~isq, timestamp=False)
    assert got.to_json() == want.to_json()
    compare(got, ref.evaluate(np.concatenate([q, r]), qy + ry, metric="l2", is_query=isq,
                              is_gallery=~isq))
    # keywords too, and the same object as reference: every row both, self excluded
    same = opis_cli.evaluate(x, y, reference=x, reference_labels=list(y), metric="l2",
                             timestamp=False)
    assert same.to_json() == opis_cli.evaluate(x, y, metric="l2", timestamp=False).to_json()


@pytest.mark.parametrize("kw,needle", [
    (dict(reference_labels=["a"]), "reference and reference_labels go together"),
    (dict(reference="R", reference_labels="RY", is_query=[True] * 10), "is_query/is_gallery"),
    (dict(reference="X", reference_labels=["zz"] * 10), "reference_labels must equal"),
    (dict(reference="R", reference_labels=["a"]), "reference_labels: 1 labels for 5"),
    (dict(include=("retrieval", "speed")), "include 'speed': expected some of"),
])
def test_reference_and_include_errors(kw, needle):
    x, y = sized_rows(1)
    x, y = x[:10], y[:10]
    sub = {"R": x[:5], "RY": y[:5], "X": x}
    kw = {k: sub.get(v, v) if isinstance(v, str) else v for k, v in kw.items()}
    with pytest.raises((ConfigError, InputError), match=needle):
        opis_cli.evaluate(x, y, **kw)


@pytest.mark.parametrize("engine", ["exact", "knn", "sampled"])
def test_include_without_retrieval_skips_it_and_changes_nothing_else(engine):
    x, y = sized_rows(12)
    eng = {"exact": None, "knn": KnnEngine(k=len(y) - 1),
           "sampled": SampledEngine(negatives_per_query=len(y), retrieval_queries=len(y))}[engine]
    full = opis_cli.evaluate(x, y, metric="l2", engine=eng, timestamp=False)
    lean = opis_cli.evaluate(x, y, metric="l2", engine=eng, include=("consistency",),
                             timestamp=False)
    assert lean.retrieval is None and full.retrieval is not None
    assert all(c.recall_at_1 is None for c in lean.classes.per_class)
    d, e = json.loads(lean.to_json()), json.loads(full.to_json())
    assert d.pop("retrieval") is None and d["options"].pop("retrieval") is False
    e.pop("retrieval")
    for doc in (d, e):
        doc.pop("provenance")
        doc.pop("estimate", None)
        for c in doc["per_class"]:
            c.pop("recall_at_1")
    assert d == e
    assert np.isnan(lean.gate_metrics()["r_precision"])
    back = opis_cli.EvaluationResult.from_json(lean.to_json())
    assert back.retrieval is None


def test_include_verification_turns_the_view_on():
    x, y = sized_rows(12)
    res = opis_cli.evaluate(x, y, metric="l2", include=("retrieval", "verification"),
                            timestamp=False)
    assert res.verification is not None and res.retrieval is not None


def test_integer_keys_for_recall_at_k():
    x, y = sized_rows(3)
    r = opis_cli.evaluate(x, y, metric="l2", timestamp=False).retrieval
    for k in (1, 2, 4, 8):
        assert r.recall_at_k[k] == r.recall_at_k[str(k)] == r.recall_at(k)
    assert 1 in r.recall_at_k and "1" in r.recall_at_k
    assert list(json.loads(opis_cli.evaluate(x, y, metric="l2", timestamp=False).to_json())
                ["retrieval"]["recall_at_k"]) == ["1", "2", "4", "8"]
    with pytest.raises(KeyError):
        r.recall_at(3)


def test_one_row_group_stays_evaluated_at_the_default():
    """A group of one row has positives in other groups: the default 2 keeps it
    (SPEC 3: the default adds nothing), 3 excludes it."""
    x, y = sized_rows(8)
    groups = ["rest"] * (len(y) - 1) + ["solo"]
    assert y.count(y[-1]) >= 2  # premise: the solo row's class has other rows
    for min_rows, solo_in in ((2, True), (3, False)):
        res, r = run_both(x, y, metric="l2", groups=groups, min_class_rows=min_rows)
        assert ("solo" in {c.label for c in res.groups.per_class}) == solo_in
        compare(res, r)
