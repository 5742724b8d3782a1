"""SPEC 16 from the knn engine's candidates: lower bounds, exact where it says so.

Against ``diagnosis_reference.py`` (every pair enumerated in float64, from
the SPEC text): when K covers the gallery the diagnosis equals the exact
one; otherwise every accepted-negative count is at most the reference's,
at least what the reference counts over the queries the engine calls
complete, and equal for a class whose queries are all complete; rejected
rows (positives are exact in the knn engine) and duplicates are exact, and
every suspect it reports is a suspect of the reference.
"""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest

import opis_cli
from opis_cli.cli import main
from opis_cli.diagnosis import Diagnosis
from opis_cli.engines.knn import ApproximationWarning, KnnEngine
from test_diagnosis import assert_same, compare, engine_case

pytestmark = pytest.mark.filterwarnings("ignore::opis_cli.engines.knn.ApproximationWarning")


def _case(seed: int):
    return engine_case(seed)


def _without_coverage(d: Diagnosis) -> str:
    doc = d.to_dict()
    doc.pop("coverage")
    return json.dumps(doc)


@pytest.mark.parametrize("seed", range(6))
def test_k_covering_the_gallery_equals_exact(seed):
    x, lab, kw, want = _case(seed)
    exact = opis_cli.evaluate(x, lab, **kw)
    knn = opis_cli.evaluate(x, lab, engine=KnnEngine(k=len(lab), index="flat"), **kw)
    cov = knn.diagnosis.coverage
    assert cov.complete == cov.nearest_known == cov.queries == len(cov.complete_rows) > 0
    assert "every accepted pair was seen" in cov.note()
    assert _without_coverage(knn.diagnosis) == json.dumps(exact.diagnosis.to_dict())
    d = knn.diagnosis
    compare(Diagnosis(**{**d.__dict__, "coverage": None}), want)


def _complete_counts(want: dict, lab, t: float, rows) -> dict:
    """A(c, c') over the given query rows only, from the reference's distances."""
    out: dict = defaultdict(int)
    rows = set(int(r) for r in rows)
    for (q, g), dist in want["_distances"].items():
        if q in rows and lab[q] != lab[g] and dist <= t:
            out[str(lab[q]), str(lab[g])] += 1
    return dict(out)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("k", [3, 12])
def test_small_k_lower_bounds_exact_where_complete(seed, k):
    x, lab, kw, want = _case(seed)
    lab = [str(v) for v in lab]
    res = opis_cli.evaluate(x, lab, engine=KnnEngine(k=k, index="flat"), **kw)
    d = res.diagnosis
    cov = d.coverage
    assert cov.method == "candidates" and cov.k == k and cov.exact_search
    cols = d.pairs.columns()
    got = {(a, b): int(v) for a, b, v in zip(cols["label"], cols["impostor"], cols["accepts"])}
    full = want["_A"]
    seen = _complete_counts(want, lab, kw["threshold"], cov.complete_rows)
    for key, v in got.items():
        assert 0 < v <= full[key], key
    for key, v in seen.items():  # every accept of a complete query was counted
        assert got.get(key, 0) >= v, key
    # a class whose queries are all complete: its whole row of A is exact
    q_rows = [i for i in range(len(lab)) if kw["is_query"] is None or kw["is_query"][i]]
    complete = set(cov.complete_rows.tolist())
    by_class: dict = defaultdict(list)
    for q in q_rows:
        by_class[lab[q]].append(q in complete)
    for c, flags in by_class.items():
        if all(flags):
            assert {b: v for (a, b), v in got.items() if a == c} == \
                {b: v for (a, b), v in full.items() if a == c}, c
    # impostors: lower bounds of A and far
    for c, imps in d.impostors.items():
        for i in imps:
            assert i.accepts == got[c, i.label] <= full[c, i.label]
            assert i.far <= full[c, i.label] / want["_N"][c, i.label] + 1e-15
    # exact answers: rejected rows, duplicates, queries with positives
    dd = d.to_dict()
    assert_same(dd["rejected_rows"], want["rejected_rows"])
    assert_same(dd["duplicates"], want["duplicates"])
    assert dd["suspects"]["queries_with_positives"] == want["_queries_with_positives"]
    # suspects: a subset of the reference's, each with its exact fields
    ref_sus = {s["row"]: s for s in want["suspects"]["rows"]}
    for s in dd["suspects"]["rows"]:
        assert_same(s, ref_sus[s["row"]])
    if cov.nearest_known == cov.queries:
        assert len(dd["suspects"]["rows"]) == len(ref_sus)
    # overlap from lower bounds: never more pairs than the reference
    assert d.overlap_count <= want["overlap"]["count"]
    ref_pairs = {(p["a"], p["b"]) for p in want["overlap"]["top"]}
    if want["overlap"]["count"] <= 20:
        assert {(p.a, p.b) for p in d.overlap_top} <= ref_pairs
    assert cov.complete == len(cov.complete_rows) <= cov.queries


def test_small_k_cases_are_not_vacuous():
    """Across the seeds, small K leaves incomplete queries and missed accepts, and
    completes others."""
    missed = complete = incomplete = 0
    for seed in range(12):
        x, lab, kw, want = _case(seed)
        d = opis_cli.evaluate(x, lab, engine=KnnEngine(k=3, index="flat"), **kw).diagnosis
        missed += sum(want["_A"].values()) - int(d.pairs.accepts.sum())
        complete += d.coverage.complete
        incomplete += d.coverage.incomplete
    assert missed > 0 and complete > 0 and incomplete > 0


def test_hand_worked_candidates():
    """Two tight classes on a line (l2), t = 1.5, K = 1: each row's one candidate
    is its own class's other row (distance 1) or... worked out below."""
    # rows: A at 0 and 1, B at 2 and 3; every row is query and gallery
    x = np.array([[0.0], [1.0], [2.0], [3.0]], np.float32)
    lab = ["A", "A", "B", "B"]
    kw = dict(metric="l2", calibration_range=(0.5, 2.5), num_thresholds=3, diagnose=True,
              threshold=1.5)
    # exact: accepted negatives at d <= 1.5 are (1, 2) and (2, 1): A(A, B) = A(B, A) = 1
    d1 = opis_cli.evaluate(x, lab, engine=KnnEngine(k=1, index="flat"), **kw).diagnosis
    # K = 1: row 1's nearest are rows 0 and 2 (both at 1; ties by the index's order) --
    # whichever it returned, row 1 is not complete (its only candidate is at 1 <= 1.5)
    cov = d1.coverage
    assert cov.queries == 4 and cov.complete == 0 and cov.nearest_known == 0
    assert int(d1.pairs.accepts.sum()) <= 2
    assert "lower bounds for 4 of 4 queries" in cov.note()
    # K = 2: rows 0 and 3 see their two nearest (1 at distance 1, 2 at distance 2 > 1.5):
    # complete; rows 1 and 2 have their 2nd candidate at distance 1: incomplete
    d2 = opis_cli.evaluate(x, lab, engine=KnnEngine(k=2, index="flat"), **kw).diagnosis
    assert sorted(d2.coverage.complete_rows.tolist()) == [0, 3]
    assert d2.rejected_rows == {"A": (), "B": ()}  # positives exact: all at distance 1
    # K = 3 covers the gallery: exact, A(A, B) = A(B, A) = 1
    d3 = opis_cli.evaluate(x, lab, engine=KnnEngine(k=3, index="flat"), **kw).diagnosis
    assert d3.coverage.complete == 4
    assert [(i.label, i.accepts) for i in d3.impostors["A"]] == [("B", 1)]
    assert [(i.label, i.accepts) for i in d3.impostors["B"]] == [("A", 1)]


def test_json_roundtrip_keeps_coverage():
    x, lab, kw, _ = _case(1)
    res = opis_cli.evaluate(x, lab, engine=KnnEngine(k=4, index="flat"), **kw)
    doc = res.diagnosis.to_dict()
    back = Diagnosis.from_dict(json.loads(json.dumps(doc)))
    assert back.to_dict() == doc
    assert doc["coverage"]["complete_queries"] + doc["coverage"]["incomplete_queries"] == \
        doc["coverage"]["queries"]


def test_cli_knn_diagnosis_says_it_is_from_candidates(tmp_path, capsys):
    x, lab, kw, _ = _case(2)
    emb = tmp_path / "e.npy"
    np.save(emb, x)
    labels = tmp_path / "e.txt"
    labels.write_text("".join(f"{v}\n" for v in lab))
    js = tmp_path / "r.json"
    capsys.readouterr()
    code = main(["evaluate", str(emb), "--labels", str(labels), "--metric", kw["metric"],
                 "--engine", "knn", "--k", "4", "--index", "flat", "--diagnose",
                 "--threshold", repr(kw["threshold"]), "--calibration-range", "0.1:0.9",
                 "--json", str(js)])
    out, err = capsys.readouterr()
    assert code == 0, err
    cov = json.loads(js.read_text())["diagnosis"]["coverage"]
    assert cov["method"] == "candidates" and cov["k"] == 4 and cov["incomplete_queries"] > 0
    assert "from the 4 nearest candidates: counts are lower bounds for" in out


def test_report_and_class_finder_say_it_is_from_candidates():
    from opis_cli.render.report.drilldown import drilldown_data
    from opis_cli.render.report.html import render_report

    x, lab, kw, _ = _case(2)
    res = opis_cli.evaluate(x, lab, engine=KnnEngine(k=4, index="flat"), **kw)
    note = res.diagnosis.coverage.note()
    assert note.startswith("from the 4 nearest candidates: counts are lower bounds for")
    page = render_report(res, {})
    section = page[page.index('id="where-it-fails"'):]
    assert note in section[:section.index("</section>")]
    assert drilldown_data(res, None)["diagnosis_note"] == note
    exact = opis_cli.evaluate(x, lab, **kw)
    assert drilldown_data(exact, None)["diagnosis_note"] is None
    assert "nearest candidates" not in render_report(exact, {})


def test_exact_diagnosis_has_no_coverage():
    x, lab, kw, _ = _case(3)
    doc = opis_cli.evaluate(x, lab, **kw).diagnosis.to_dict()
    assert "coverage" not in doc
