"""SPEC 16 (where a threshold fails): the engine against a naive reference, hand-worked
cases for each answer, the API, the JSON round trip, the gate metrics and the CLI.

Expected values come from ``diagnosis_reference.py`` (written from the SPEC
text, float64 by enumeration) or are worked out by hand below; never from
the code under test.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

import diagnosis_reference as ref
import opis_cli
from opis_cli.cli import main
from opis_cli.engines.diagnose import diagnose
from opis_cli.errors import ConfigError
from opis_cli.prepare import prepare
from opis_cli.results import EvaluationResult

TOL = 1e-12


# ----------------------------------------------------------------- helpers
def assert_same(got, want, where="diagnosis"):
    """Equal structure; integers and strings exactly, floats to 1e-12."""
    if isinstance(want, dict):
        assert isinstance(got, dict), where
        assert list(got) == list(want), f"{where}: keys {list(got)} != {list(want)}"
        for k in want:
            assert_same(got[k], want[k], f"{where}.{k}")
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), f"{where}: {len(got)} items != {len(want)}\n{got}\n{want}"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, f"{where}[{i}]")
    elif isinstance(want, float):
        assert isinstance(got, float), f"{where}: {got!r} is not a float"
        assert abs(got - want) <= TOL * max(1.0, abs(want)), f"{where}: {got!r} != {want!r}"
    else:
        assert type(got) is type(want) and got == want, f"{where}: {got!r} != {want!r}"


SPEC_KEYS = ("threshold", "k", "level", "impostors", "overlap", "duplicates", "rejected_rows",
             "suspects")


def compare(diag, r: dict) -> None:
    """The engine's Diagnosis against the reference's document, every answer."""
    d = diag.to_dict()
    want = {k: r[k] for k in SPEC_KEYS}
    n_pos = r["_queries_with_positives"]
    want["suspects"] = {"count": r["suspects"]["count"], "queries_with_positives": n_pos,
                        "fraction": r["suspects"]["count"] / n_pos if n_pos else None,
                        "rows": r["suspects"]["rows"]}
    assert_same(d, want)
    # the whole sparse class-pair table
    cols = diag.pairs.columns()
    got = {(a, b): int(v) for a, b, v in zip(cols["label"], cols["impostor"], cols["accepts"])}
    assert got == r["_A"]
    for a, b, n in zip(cols["label"], cols["impostor"], cols["pairs"]):
        assert int(n) == r["_N"][a, b]


def make_case(seed: int):
    """Seeded input with ties, duplicates across labels, singletons, flags and groups."""
    rng = np.random.default_rng(seed)
    metric = ("l2", "cosine")[seed % 2]
    n = int(rng.integers(50, 110))
    D = int(rng.integers(2, 6))
    if metric == "l2":
        x = rng.integers(-2, 3, size=(n, D)).astype(np.float32)  # many exact ties
    else:
        x = np.round(rng.normal(size=(n, D)), 1).astype(np.float32)
        x[np.abs(x).sum(axis=1) == 0, 0] = 1.0
    n_cls = int(rng.integers(3, 12))
    lab = np.array([f"c{v:02d}" for v in rng.integers(0, n_cls, n)], dtype=object)
    for s in rng.choice(n, 25 if seed % 4 == 3 else 3, replace=False):  # singleton classes
        lab[s] = f"solo{s}"
    for _ in range(4):  # duplicates (scaled copies: identical after cosine normalisation)
        i, j = rng.choice(n, 2, replace=False)
        x[j] = x[i] * (2.0 if metric == "cosine" else 1.0)
    is_query = is_gallery = None
    if seed % 3 == 1:
        is_query = rng.random(n) < 0.7
        is_gallery = rng.random(n) < 0.8
        is_query[:2] = True
        is_gallery[:2] = True
    groups = np.array([f"g{v}" for v in rng.integers(0, 3, n)], dtype=object)
    return metric, x, lab, is_query, is_gallery, groups


def pick_threshold(r_dists: dict, metric: str, rng) -> float:
    """A threshold between two pair distances (cosine) or exactly on one (l2 on
    integer rows: the float64 distances are exact square roots, ties included)."""
    vals = np.unique(np.fromiter(r_dists.values(), float))
    q = float(rng.uniform(0.05, 0.5))
    i = min(len(vals) - 2, int(q * len(vals)))
    if metric == "l2":
        return float(vals[i])
    while vals[i + 1] - vals[i] < 1e-9:
        i += 1
    return float((vals[i] + vals[i + 1]) / 2)


def engine_case(seed: int):
    """A seeded case of :func:`make_case` at a threshold among its distances: the
    embeddings, labels, the ``opis_cli.evaluate`` keywords of a diagnosis and the
    naive reference's diagnosis (``tests/diagnosis_reference.py``)."""
    metric, x, lab, isq, isg, groups = make_case(seed)
    rng = np.random.default_rng(1000 + seed)
    dists = ref.diagnose(x, lab, 0.0, metric=metric, is_query=isq, is_gallery=isg)["_distances"]
    t = pick_threshold(dists, metric, rng)
    kw = dict(metric=metric, is_query=isq, is_gallery=isg, groups=groups,
              calibration_range=(0.1, 0.9), num_thresholds=5, diagnose=True, threshold=t,
              impostors=3, overlap_level=(0.5, 0.2, 1.0, 0.05)[seed % 4])
    want = ref.diagnose(x, lab, t, metric=metric, is_query=isq, is_gallery=isg, k=3,
                        level=kw["overlap_level"])
    return x, lab, kw, want


# ----------------------------------------------------------------- engine vs reference
@pytest.mark.parametrize("seed", range(12))
def test_engine_matches_reference(seed):
    metric, x, lab, isq, isg, groups = make_case(seed)
    rng = np.random.default_rng(1000 + seed)
    k, level = (5, 3, 1)[seed % 3], (0.5, 0.2, 1.0, 0.05)[seed % 4]
    dists = ref.diagnose(x, lab, 0.0, metric=metric, is_query=isq, is_gallery=isg)["_distances"]
    t = pick_threshold(dists, metric, rng)
    want = ref.diagnose(x, lab, t, metric=metric, is_query=isq, is_gallery=isg, k=k, level=level)
    res = opis_cli.evaluate(x, lab, metric=metric, is_query=isq, is_gallery=isg, groups=groups,
                            calibration_range=(0.1, 0.9), num_thresholds=5, diagnose=True,
                            threshold=t, impostors=k, overlap_level=level)
    compare(res.diagnosis, want)


def test_reference_cases_exercise_every_answer():
    """The seeded cases are not vacuous: overall they hold overlapping pairs,
    suspects, duplicates across labels, rejected rows and more than 20 overlaps."""
    seen = {"overlap": 0, "suspects": 0, "dups": 0, "rejected": 0, "tied": 0}
    for seed in range(12):
        metric, x, lab, isq, isg, _ = make_case(seed)
        dists = ref.diagnose(x, lab, 0.0, metric=metric, is_query=isq,
                             is_gallery=isg)["_distances"]
        t = pick_threshold(dists, metric, np.random.default_rng(1000 + seed))
        r = ref.diagnose(x, lab, t, metric=metric, is_query=isq, is_gallery=isg,
                         level=(0.5, 0.2, 1.0, 0.05)[seed % 4])
        seen["overlap"] += r["overlap"]["count"]
        seen["tied"] += r["overlap"]["tied"]
        seen["suspects"] += r["suspects"]["count"]
        seen["dups"] += r["duplicates"]["groups"]
        seen["rejected"] += sum(len(v) for v in r["rejected_rows"].values())
    assert all(v > 0 for v in seen.values()), seen


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_fp_equals_sum_of_impostor_accepts(metric):
    """FP_c(t) = sum_c' A(c, c') equals the exact engine's class FP at a grid threshold."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(400, 8)).astype(np.float32)
    lab = rng.integers(0, 40, 400)
    lo, hi = (0.5, 1.1) if metric == "cosine" else (2.0, 4.5)
    res = opis_cli.evaluate(x, lab, metric=metric, calibration_range=(lo, hi), num_thresholds=6)
    prep = prepare(x, lab, metric=metric)
    fp = dict(zip(res.curves.labels, res.curves.fp.tolist()))  # (C, K)
    for kk in (1, 3, 5):
        diag = diagnose(prep, res.thresholds[kk])
        cols = diag.pairs.columns()
        total: dict = {}
        for a, v in zip(cols["label"], cols["accepts"]):
            total[a] = total.get(a, 0) + int(v)
        assert any(total.values())
        for c, series in fp.items():
            assert total.get(c, 0) == series[kk]
        # the impostor shares of a class with false accepts sum to at most 1
        for c, imps in diag.impostors.items():
            if imps and len(imps) < diag.k:
                assert math.isclose(sum(i.share for i in imps), 1.0, rel_tol=1e-12)


# ----------------------------------------------------------------- hand-worked cases
def test_hand_impostors_overlap_rejected():
    # 1-D, l2, t = 1.5. A: 0, 10; B: 1, 11; C: 100, 200 (rows 0..5 in this order).
    # Accepted: A0-B0, A1-B1 both ways (d = 1); every genuine pair is rejected
    # (A: 10, B: 10, C: 100). A(A, B) = A(B, A) = 2, N = 2 x 2 = 4.
    x = np.array([[0], [10], [1], [11], [100], [200]], np.float32)
    lab = ["A", "A", "B", "B", "C", "C"]
    d = diagnose(prepare(x, lab, metric="l2"), 1.5, level=0.5).to_dict()
    assert d["impostors"] == {
        "A": [{"label": "B", "accepts": 2, "far": 0.5, "share": 1.0}],
        "B": [{"label": "A", "accepts": 2, "far": 0.5, "share": 1.0}],
        "C": []}
    # overlap(A, B) = (2 + 2) / (4 + 4) = 0.5 >= max(0.5, TPR_A = 0, TPR_B = 0)
    assert d["overlap"] == {"count": 1, "tied": 0, "top": [
        {"a": "A", "b": "B", "overlap": 0.5, "accepts_ab": 2, "accepts_ba": 2,
         "pairs_ab": 4, "pairs_ba": 4}]}
    assert d["rejected_rows"] == {
        "A": [{"row": 0, "rejected": 1, "frr": 1.0}, {"row": 1, "rejected": 1, "frr": 1.0}],
        "B": [{"row": 2, "rejected": 1, "frr": 1.0}, {"row": 3, "rejected": 1, "frr": 1.0}],
        "C": [{"row": 4, "rejected": 1, "frr": 1.0}, {"row": 5, "rejected": 1, "frr": 1.0}]}
    assert d["suspects"]["count"] == 0  # every row's 3 nearest mix two labels
    # a level above 0.5 leaves the pair out
    assert diagnose(prepare(x, lab, metric="l2"), 1.5, level=0.6).overlap_count == 0


def test_hand_overlap_needs_tpr():
    # A: 0, 1; B: 0.5; C: 9, 9.5. t = 1: A's genuine pair is accepted (TPR_A =
    # 1), and so is every A-B pair: overlap (2 + 2) / (2 + 2) = 1 >= max(0.5,
    # TPR_A = 1); B has no positive pair and drops out of the max.
    x = np.array([[0], [1], [0.5], [9], [9.5]], np.float32)
    lab = ["A", "A", "B", "C", "C"]
    prep = prepare(x, lab, metric="l2")
    d = diagnose(prep, 1.0)
    assert [(p.a, p.b, p.overlap) for p in d.overlap_top] == [("A", "B", 1.0)]
    # C's genuine pair (0.5) is accepted: TPR_C = 1; A-C and B-C are far apart
    # an overlap of 2/3 against TPR = 1 is not enough: A at 0, 1; B at 0.9 and 5
    x2 = np.array([[0], [1], [0.9], [5], [9], [9.5]], np.float32)
    lab2 = ["A", "A", "B", "B", "C", "C"]
    d2 = diagnose(prepare(x2, lab2, metric="l2"), 1.0).to_dict()
    # A-B accepts: A0-B0 (0.9), A1-B0 (0.1) and back: 4 of N = 4 + 4 -> 0.5;
    # TPR_A = 1 (d = 1 <= 1) so 0.5 < 1: not overlapping
    assert d2["overlap"]["count"] == 0
    assert d2["impostors"]["A"] == [{"label": "B", "accepts": 2, "far": 0.5, "share": 1.0}]


def test_hand_tied_overlaps():
    # 25 singleton labels on one point (no TPR: the level alone decides) and two
    # far-away evaluated classes: C(25, 2) = 300 pairs overlap, all at 1.0 with
    # 2 cross pairs each, so the top 20 are the first 20 in label order and
    # tied counts all 300.
    solo = [f"s{i:02d}" for i in range(25)]
    x = np.array([[0.0]] * 25 + [[50], [51], [80], [81]], np.float32)
    lab = solo + ["A", "A", "B", "B"]
    d = diagnose(prepare(x, lab, metric="l2"), 2.0)
    assert d.overlap_count == 300 and d.overlap_tied == 300
    first = [(a, b) for i, a in enumerate(solo) for b in solo[i + 1:]][:20]
    assert [(p.a, p.b) for p in d.overlap_top] == first
    assert all(p.overlap == 1.0 and p.pairs_ab + p.pairs_ba == 2 for p in d.overlap_top)
    # the singletons are not evaluated: no impostor or rejected-row lists for them
    assert sorted(d.impostors) == ["A", "B"] and sorted(d.rejected_rows) == ["A", "B"]
    # every singleton row is one duplicate group holding 25 labels
    assert d.duplicate_groups == 1 and d.duplicate_rows == 25
    assert d.duplicate_top[0].shared == 1 and len(d.duplicate_top) == 20


def test_hand_duplicates_cosine():
    # cosine: [1, 0] and [2, 0] normalise to the same row (labels A, B); [0, 1]
    # twice under A and [0, 3] under C form a group holding A and C; [1, 1] (B)
    # duplicates nothing. -0.0 and 0.0 are the same value.
    x = np.array([[1, 0], [2, -0.0], [0, 1], [0, 1], [0, 3], [1, 1], [5, 5.1]], np.float32)
    lab = ["A", "B", "A", "A", "C", "B", "C"]
    d = diagnose(prepare(x, lab), 0.01).to_dict()
    assert d["duplicates"] == {"groups": 2, "rows": 5, "top": [
        {"a": "A", "b": "B", "shared": 1}, {"a": "A", "b": "C", "shared": 1}]}


def test_hand_suspects():
    # l2, t = 5. A: 0, 50; B: 1, 2, 3. Row 0's three nearest are B (1, 2, 3) and
    # its only genuine pair (50) is rejected: a suspect that looks like B, its
    # nearest positive at 50. Row 1 (50): nearest 3, 2, 1 (all B), genuine pair
    # rejected: a suspect too. B's rows accept their genuine pairs (<= 2).
    x = np.array([[0], [50], [1], [2], [3]], np.float32)
    lab = ["A", "A", "B", "B", "B"]
    d = diagnose(prepare(x, lab, metric="l2"), 5.0)
    assert d.to_dict()["suspects"] == {"count": 2, "queries_with_positives": 5, "fraction": 0.4,
                                       "rows": [
        {"row": 0, "label": "A", "looks_like": "B", "nearest_positive": 50.0},
        {"row": 1, "label": "A", "looks_like": "B", "nearest_positive": 50.0}]}
    assert d.suspect_fraction == 0.4
    # at t = 50 the genuine pair is accepted: no suspect
    assert diagnose(prepare(x, lab, metric="l2"), 50.0).suspects == ()
    # ties among the nearest go to the smaller row. Add a C row at 3 as row 5:
    # row 0 (at 0) ties B's row 4 with it for third place and keeps row 4 (B, B,
    # B: still a suspect); row 1 (at 50) sees rows 4, 5 tied at 47 first: B, C
    # -> no longer a suspect
    x3 = np.vstack([x, [[3]]]).astype(np.float32)
    d3 = diagnose(prepare(x3, lab + ["C"], metric="l2"), 5.0)
    assert [s.row for s in d3.suspects] == [0]
    # the same C row as row 0 wins both ties: rows 1 and 2 (A) see C among their 3
    x4 = np.vstack([[[3]], x]).astype(np.float32)
    d4 = diagnose(prepare(x4, ["C"] + lab, metric="l2"), 5.0)
    assert d4.suspects == ()


def test_query_gallery_flags_hand():
    # Only rows 0, 1 are queries; rows 1..4 are the gallery. Row 0 (A at 0) sees
    # A at 10 (row 1, its only positive: rejected at t = 2) and B at 1, 1.5, 2.
    x = np.array([[0], [10], [1], [1.5], [2]], np.float32)
    lab = ["A", "A", "B", "B", "B"]
    isq = [True, True, False, False, False]
    d = diagnose(prepare(x, lab, metric="l2", is_query=isq,
                         is_gallery=[False, True, True, True, True]), 2.0)
    assert [(s.row, s.looks_like) for s in d.suspects] == [(0, "B")]
    # row 1 has no positive in the gallery (row 0 is not a gallery row): P_q = 0
    assert d.queries_with_positives == 1
    assert d.to_dict()["impostors"]["A"] == [{"label": "B", "accepts": 3, "far": 3 / 6,
                                              "share": 1.0}]


# ----------------------------------------------------------------- API, JSON, determinism
def test_default_threshold_json_roundtrip_frames_and_determinism():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 6)).astype(np.float32)
    lab = rng.integers(0, 25, 300)
    res = opis_cli.evaluate(x, lab, diagnose=True, timestamp=False)
    d = res.diagnosis
    assert d.threshold == res.recommended_threshold.value
    back = EvaluationResult.from_json(res.to_json())
    assert back.diagnosis == d and back.diagnosis.pairs is None
    assert back.to_dict()["diagnosis"] == res.to_dict()["diagnosis"]
    frames = d.to_frames()
    assert set(frames) == {"impostors", "pairs", "overlap", "rejected", "suspects"}
    assert int(frames["pairs"]["accepts"].sum()) == sum(int(v) for v in d.pairs.accepts)
    assert len(frames["suspects"]) == len(d.suspects)
    with pytest.raises(ValueError):
        back.diagnosis.pairs_frame()
    small = opis_cli.evaluate(x, lab, diagnose=True, timestamp=False, block_bytes=4096)
    assert small.to_json() == res.to_json()
    assert res.gate_metrics()["overlapping_pairs"] == d.overlap_count


def test_options_checked():
    x = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    lab = [i % 4 for i in range(20)]
    for kw, needle in ((dict(threshold=0.5), "--diagnose"),
                       (dict(diagnose=True, impostors=0), "--impostors"),
                       (dict(diagnose=True, overlap_level=0.0), "--overlap-level"),
                       (dict(diagnose=True, overlap_level=1.5), "--overlap-level"),
                       (dict(diagnose=True, threshold=float("nan")), "--threshold"),
                       (dict(diagnose=True, threshold=-1.0, metric="l2"), "--threshold")):
        with pytest.raises(ConfigError, match=needle):
            opis_cli.evaluate(x, lab, **kw)


# ----------------------------------------------------------------- CLI
SUSPECT_X = np.array([[0], [50], [1], [2], [3]], np.float32)
SUSPECT_LAB = ["A", "A", "B", "B", "B"]
CLEAN_X = np.array([[0], [10], [1], [11], [100], [200]], np.float32)
CLEAN_LAB = ["A", "A", "B", "B", "C", "C"]


def _files(tmp_path, x, lab, name="e"):
    emb = tmp_path / f"{name}.npy"
    np.save(emb, x)
    labels = tmp_path / f"{name}.txt"
    labels.write_text("".join(f"{v}\n" for v in lab))
    return emb, labels


def _run(capsys, *args):
    capsys.readouterr()
    code = main(["evaluate", *(str(a) for a in args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_gate_on_suspects(tmp_path, capsys):
    common = ("--metric", "l2", "--calibration-range", "1:6", "--diagnose", "--threshold", "5")
    emb, labels = _files(tmp_path, SUSPECT_X, SUSPECT_LAB)
    code, out, err = _run(capsys, emb, "--labels", labels, *common, "--max", "suspect_rows=0")
    assert code == 1, err
    assert "suspect_rows = 2 > 0" in out  # the result, the gate included, on stdout
    emb2, labels2 = _files(tmp_path, CLEAN_X, CLEAN_LAB, "clean")
    code, _, err = _run(capsys, emb2, "--labels", labels2, *common, "--max", "suspect_rows=0")
    assert code == 0, err
    # without --diagnose the metric is not available: the rule fails with a hint
    code, out, err = _run(capsys, emb2, "--labels", labels2, "--metric", "l2",
                          "--calibration-range", "1:6", "--max", "suspect_rows=0")
    assert code == 1 and "--diagnose" in out


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_cli_pairs_file_and_json(tmp_path, capsys, suffix):
    emb, labels = _files(tmp_path, CLEAN_X, CLEAN_LAB)
    out = tmp_path / f"pairs{suffix}"
    js = tmp_path / "r.json"
    code, shown, err = _run(capsys, emb, "--labels", labels, "--metric", "l2",
                            "--calibration-range", "1:6", "--diagnose", "--threshold", "1.5",
                            "--pairs", out, "--json", js)
    assert code == 0, err
    table = (pacsv.read_csv(out) if suffix == ".csv" else pq.read_table(out)).to_pydict()
    assert table == {"label": ["A", "B"], "impostor": ["B", "A"], "accepts": [2, 2],
                     "pairs": [4, 4], "far": [0.5, 0.5]}
    doc = json.loads(js.read_text())
    assert doc["diagnosis"]["overlap"]["count"] == 1
    assert doc["diagnosis"]["threshold"] == 1.5
    assert "Where it fails" in shown and "Most overlapping class pairs" in shown
    assert f"wrote {out}" in err


@pytest.mark.parametrize("args, needle", [
    (("--threshold", "0.5"), "--diagnose"),
    (("--pairs", "p.csv"), "--diagnose"),
    (("--diagnose", "--impostors", "0"), "--impostors"),
    (("--diagnose", "--overlap-level", "0"), "--overlap-level"),
    (("--diagnose", "--overlap-level", "2"), "--overlap-level"),
    (("--diagnose", "--pairs", "p.txt"), "--pairs"),
    (("--diagnose", "--engine", "reference"), "--engine exact"),
])
def test_cli_bad_options(tmp_path, capsys, args, needle):
    emb, labels = _files(tmp_path, CLEAN_X, CLEAN_LAB)
    args = tuple(str(tmp_path / a) if a.startswith("p.") else a for a in args)
    code, out, err = _run(capsys, emb, "--labels", labels, "--metric", "l2", *args)
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and needle in lines[0], err
    assert not (tmp_path / "p.csv").exists()


def test_cli_escapes_labels(tmp_path, capsys):
    lab = ["A\x1b[31m", "A\x1b[31m", "B\u202e", "B\u202e", "C", "C"]
    emb, labels = _files(tmp_path, CLEAN_X, lab)
    code, out, err = _run(capsys, emb, "--labels", labels, "--metric", "l2",
                          "--calibration-range", "1:6", "--diagnose", "--threshold", "1.5")
    assert code == 0, err
    assert "\x1b" not in out + err and "\u202e" not in out + err
    assert "\\x1b" in out and "\\u202e" in out


def test_html_section_escapes_labels():
    from opis_cli.render.report.html import render_report

    lab = ["<b>A</b>", "<b>A</b>", "B\x1b&", "B\x1b&", "C", "C"]
    res = opis_cli.evaluate(CLEAN_X, lab, metric="l2", calibration_range=(1, 6),
                            diagnose=True, threshold=1.5)
    page = render_report(res, {})
    sec = page[page.index('<section id="where-it-fails">'):]
    sec = sec[:sec.index("</section>")]
    assert "<b>A</b>" not in sec and "&lt;b&gt;A&lt;/b&gt;" in sec
    assert "\x1b" not in sec and "B\\x1b&amp;" in sec
    assert "Overlapping class pairs (1 in all)" in sec
    assert 'href="#where-it-fails"' in page
    # without a diagnosis there is no such section
    plain = opis_cli.evaluate(CLEAN_X, lab, metric="l2", calibration_range=(1, 6))
    assert "where-it-fails" not in render_report(plain, {})


def test_compare_overlaps_and_suspects_that_appear_or_disappear(tmp_path, capsys):
    from opis_cli.gate.compare import compare_results

    # baseline: rows 0 and 1 (A at 0 and 50) are suspects; A-B overlap 0.5 < TPR_B = 1.
    # candidate: A's second row moves to 0.5, every pair is accepted at t = 5: no
    # suspect, and A-B overlap 12 / 12 = 1 >= max(0.5, TPR_A = 1, TPR_B = 1).
    kw = dict(metric="l2", calibration_range=(1, 6), diagnose=True, threshold=5.0,
              timestamp=False)
    base = opis_cli.evaluate(SUSPECT_X, SUSPECT_LAB, **kw)
    moved = SUSPECT_X.copy()
    moved[1] = 0.5
    cand = opis_cli.evaluate(moved, SUSPECT_LAB, **kw)
    d = compare_results(base, cand).diagnosis
    assert d.to_dict() == {
        "baseline_threshold": 5.0, "candidate_threshold": 5.0,
        "overlapping_pairs": {"baseline": 0, "candidate": 1, "new": [["A", "B"]], "gone": [],
                              "complete": True},
        "suspects": {"baseline": 2, "candidate": 0, "new": [], "gone": [0, 1]}}
    # without a diagnosis on one side there is no such block (and no JSON key)
    plain = opis_cli.evaluate(moved, SUSPECT_LAB, metric="l2", calibration_range=(1, 6))
    assert compare_results(base, plain).diagnosis is None
    assert "diagnosis" not in compare_results(base, plain).to_dict()
    b, c = tmp_path / "b.json", tmp_path / "c.json"
    b.write_text(base.to_json())
    c.write_text(cand.to_json())
    capsys.readouterr()
    code = main(["compare", str(b), str(c)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "suspect rows 2 -> 0" in out and "suspect rows gone: 0, 1" in out
    assert "new overlapping pairs: A ~ B" in out


@pytest.mark.parametrize("seed", [0, 5])
def test_blocked_reference_agrees_with_naive(seed):
    """The blocked float64 reader (for real data) gives the naive reader's document."""
    metric, x, lab, isq, isg, _ = make_case(2 * seed + 1)  # cosine
    dists = ref.diagnose(x, lab, 0.0, metric=metric, is_query=isq, is_gallery=isg)["_distances"]
    t = pick_threshold(dists, metric, np.random.default_rng(seed))
    a = ref.diagnose(x, lab, t, metric=metric, is_query=isq, is_gallery=isg)
    b = ref.diagnose_blocked(x, lab, t, metric=metric, is_query=isq, is_gallery=isg, block=7)
    assert b["_near_t"] == 0
    assert_same({k: b[k] for k in SPEC_KEYS}, {k: a[k] for k in SPEC_KEYS})
    assert b["_A"] == a["_A"]


def test_real_data_matches_float64_reference():
    """The WordNet sample (8,047 rows, 1,300 classes) at an explicit threshold: every
    answer equals the blocked float64 reference, counts exactly, ratios to 1e-12."""
    import pyarrow.parquet as pq_

    from pathlib import Path

    table = pq_.read_table(Path(__file__).resolve().parents[1] / "sample_data"
                           / "wordnet_hyponyms.parquet", columns=["embedding", "label"])
    x = np.asarray(table.column("embedding").combine_chunks().flatten(), np.float32) \
        .reshape(table.num_rows, -1)
    lab = table.column("label").to_pylist()
    t = 0.75
    want = ref.diagnose_blocked(x, lab, t, metric="cosine", k=5, level=0.5)
    assert want["_near_t"] == 0 and want["_near_rank"] == 0  # nothing float64 order could flip
    res = opis_cli.evaluate(x, lab, calibration_range=(0.7, 0.8), num_thresholds=3,
                            diagnose=True, threshold=t)
    compare(res.diagnosis, want)
    assert res.diagnosis.overlap_count > 20 and len(res.diagnosis.suspects) > 10


# ----------------------------------------------------------------- merging the sparse table
def test_merge_runs_sums_classes_cut_between_runs():
    """Runs each sorted and duplicate-free, in class order, a class cut between
    several runs: one sorted table with equal (c, c') summed (a naive dict sum)."""
    from opis_cli.engines.diagnose import CHUNK, _merge_runs

    rng = np.random.default_rng(3)
    C = 9
    want: dict = {}
    runs = []
    c = 0
    for _ in range(40):
        c = min(C - 1, c + int(rng.integers(0, 2)))  # the same class often spans runs
        keys = np.unique(c * C + rng.choice([x for x in range(C) if x != c],
                                            int(rng.integers(0, 6))))
        vals = rng.integers(1, 50, len(keys))
        for k_, v in zip(keys.tolist(), vals.tolist()):
            want[k_] = want.get(k_, 0) + v
        runs.append((keys.astype(np.int64), vals.astype(np.int64)))
    key, a = _merge_runs(runs, C)
    assert runs == []  # consumed
    assert key.tolist() == sorted(want) and a.tolist() == [want[k_] for k_ in sorted(want)]
    assert CHUNK >= 1


def test_classes_cut_between_tiles_same_result(monkeypatch):
    """64-row tiles (classes cut between them, flushed twice and summed) give the
    one-tile result, and both equal the float64 reference."""
    from opis_cli.engines import base

    rng = np.random.default_rng(5)
    n = 600
    y = rng.integers(0, 12, n)
    x = (rng.integers(-3, 4, size=(12, 5))[y] + rng.integers(-2, 3, size=(n, 5))).astype(
        np.float32)
    lab = np.array([f"k{v:02d}" for v in y], dtype=object)
    prep = prepare(x, lab, metric="l2")
    one = diagnose(prep, 3.0, level=0.1)
    monkeypatch.setattr(base, "TILE_BYTES", 1)
    assert base.tile_rows(n) == 64
    cut = diagnose(prep, 3.0, level=0.1)
    assert json.dumps(cut.to_dict()) == json.dumps(one.to_dict())
    assert {k_: v.tolist() for k_, v in cut.pairs.columns().items()} == \
        {k_: v.tolist() for k_, v in one.pairs.columns().items()}
    want = ref.diagnose_blocked(x, lab, 3.0, metric="l2", level=0.1)
    compare(cut, want)
    assert len(cut.pairs) > 30 and any(cut.rejected_rows.values())
