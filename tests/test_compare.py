"""``opis compare``: headline deltas, per-class changes, shared thresholds, report, gate.

Expected deltas are computed here from the two result documents
(``candidate - baseline`` of their JSON values); the sample models are
evaluated once per session (``gating_samples``).
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from gating_samples import STRONG, WEAK, run
from opis_cli import evaluate
from opis_cli.gate.compare import compare_results, comparability_warnings
from opis_cli.render.markdown import compare_markdown as markdown
from opis_cli.io import read_result
from opis_cli.render.format import metric_row_label as label




def headline_of(doc: dict) -> dict:
    rt = doc["recommended_threshold"]
    rk = doc["retrieval"]["recall_at_k"]
    return {"opis": doc["opis"], "epsilon_opis": doc["epsilon_opis"],
            "recall_at_1": rk["1"], "map_at_r": doc["retrieval"]["map_at_r"],
            "threshold": rt["value"], "far": rt["far"], "tpr": rt["tpr"]}


# ------------------------------------------------------------------ the library


def test_deltas_and_class_changes_match_the_documents(samples):
    b_doc = json.loads(samples.weak_json.read_text())
    c_doc = json.loads(samples.strong_json.read_text())
    cmp = compare_results(read_result(samples.weak_json), read_result(samples.strong_json),
                          baseline_name="weak", candidate_name="strong")
    bh, ch = headline_of(b_doc), headline_of(c_doc)
    for name in bh:
        m = cmp.metric(name)
        assert (m.baseline, m.candidate) == (bh[name], ch[name])
        assert m.change == pytest.approx(ch[name] - bh[name], abs=1e-15)
        assert m.relative == pytest.approx((ch[name] - bh[name]) / abs(bh[name]))
    assert cmp.metric("opis").verdict == "better"          # lower is better
    assert cmp.metric("recall_at_1").verdict == "better"   # higher is better
    assert cmp.metric("threshold").verdict == ""           # no direction
    bpc = {c["label"]: c for c in b_doc["per_class"]}
    cpc = {c["label"]: c for c in c_doc["per_class"]}
    assert len(cmp.classes) == len(bpc) == 10 and not cmp.only_baseline
    for c in cmp.classes:
        assert c.change == pytest.approx(cpc[c.label]["mean_utility"]
                                         - bpc[c.label]["mean_utility"])
        assert c.baseline_far == bpc[c.label]["far_at_threshold"]
        assert c.candidate_frr == cpc[c.label]["frr_at_threshold"]
    changes = [c.change for c in cmp.classes]
    assert changes == sorted(changes)
    assert all(c.change > 0 for c in cmp.most_better(3)) and len(cmp.most_better(3)) == 3
    assert cmp.most_better(1)[0].change == max(changes)


def test_warnings_for_results_measured_differently(samples):
    w, s = read_result(samples.weak_json), read_result(samples.strong_json)
    assert comparability_warnings(w, w) == []
    warn = comparability_warnings(w, s)
    assert len(warn) == 1 and "different calibration ranges" in warn[0]


def test_class_sets_may_differ():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 12)
    x = rng.normal(size=(4, 6))[y] + 0.5 * rng.normal(size=(48, 6))
    a = evaluate(x, [f"c{v}" for v in y], timestamp=False)
    lab = [f"c{v}" if v < 3 else "d3" for v in y]
    b = evaluate(x, lab, timestamp=False)
    cmp = compare_results(a, b)
    assert cmp.only_baseline == ("c3",) and cmp.only_candidate == ("d3",)
    assert len(cmp.classes) == 3
    assert any("evaluated classes differ" in w for w in cmp.warnings)
    assert "evaluated classes differ" in markdown(cmp)


# ------------------------------------------------------------------ the command


def test_compare_sample_models_as_a_user_would(samples, capsys, isolated):
    """Weak -> strong passes a sensible gate, strong -> weak fails it."""
    rules = ["--max-increase", "opis=10%", "--max-increase", "epsilon_opis=10%",
             "--max-decrease", "recall_at_1=0.005"]
    code, out, err = run(capsys, "compare", WEAK, STRONG, *rules, "--report", "rep",
                         "--json", "-", "--markdown", "cmp.md")
    assert code == 0, err
    doc = json.loads(out)
    cmp = doc["comparison"]
    # each model on its own FAR range (the default): different distance thresholds
    assert cmp["mode"] == "own-range" and cmp["same_thresholds"] is False
    assert cmp["warnings"] == [] and cmp["headline_vs_classes"] is None
    assert doc["gate"]["passed"] is True and doc["gate"]["rules"] == 3
    assert "Gate passed" in err and "Headline metrics" in err
    html = (isolated / "rep" / "compare.html").read_text()
    assert html.count("data:image/png;base64,") == 4
    for name in ("mean_utility", "class_curves", "class_changes", "far_frr_changes"):
        assert (isolated / "rep" / f"{name}.png").stat().st_size > 1000
    md = (isolated / "cmp.md").read_text()
    # the verdict first (which model is more consistent), then the gate and the comparison
    assert md.startswith("### Which model is more consistent?\n\n**Candidate**: the candidate is "
                         "more consistent")
    assert md.index("### opis gate: passed") < md.index("### opis compare")

    code, out, err = run(capsys, "compare", samples.strong_json, WEAK, *rules, "--json", "-")
    assert code == 1
    doc = json.loads(out)
    assert doc["comparison"]["mode"] == "own-range"
    assert doc["gate"]["passed"] is False
    broken = {r["rule"] for r in doc["gate"]["results"] if not r["passed"]}
    assert broken == {"max-increase opis=10%", "max-increase epsilon_opis=10%",
                      "max-decrease recall_at_1=0.005"}
    strong_doc = json.loads(samples.strong_json.read_text())
    opis_row = next(m for m in doc["comparison"]["metrics"] if m["metric"] == "opis")
    assert opis_row["baseline"] == strong_doc["opis"]
    assert opis_row["candidate"] > 5 * strong_doc["opis"]


def test_compare_a_model_against_itself_is_not_flagged(samples, capsys, isolated):
    # The JSON side stores a bootstrap (200 resamples, seed 7); the embeddings side is
    # evaluated on the same thresholds and bootstrapped with the same draws.
    code, out, err = run(capsys, "compare", samples.weak_json, WEAK,
                         "--max-increase", "opis=ci", "--max-increase", "epsilon_opis=ci",
                         "--max-increase", "opis=0", "--json", "-")
    assert code == 0, err
    doc = json.loads(out)
    for iv in doc["comparison"]["intervals"]:
        assert iv["method"] == "paired"
        assert (iv["lower"], iv["upper"], iv["estimate"]) == (0.0, 0.0, 0.0)
    assert all(m["change"] == 0 for m in doc["comparison"]["metrics"])
    assert doc["comparison"]["warnings"] == []


@pytest.fixture(scope="module")
def two_small_models(tmp_path_factory):
    """Two 'models' of the same 5 classes; the second one's embeddings are scaled (l2)."""
    d = tmp_path_factory.mktemp("small_models")
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(5), 20)
    x = rng.normal(size=(5, 6))[y] + 0.7 * rng.normal(size=(100, 6))
    labels = np.array([f"<b>c{v}&" for v in y])       # labels that need escaping in HTML
    a, b = d / "a.npz", d / "b.npz"
    np.savez(a, embeddings=x.astype(np.float32), labels=labels)
    np.savez(b, embeddings=(3 * x + 0.3 * rng.normal(size=x.shape)).astype(np.float32),
             labels=labels)
    return a, b


def test_same_thresholds_and_default_range(two_small_models, capsys, isolated):
    a, b = two_small_models
    code, out, _ = run(capsys, "compare", a, b, "--metric", "l2", "--same-thresholds",
                       "--json", "-", "-q")
    assert code == 0
    doc = json.loads(out)["comparison"]
    assert doc["same_thresholds"] is True and doc["mode"] == "same-thresholds"
    code, out, _ = run(capsys, "compare", a, b, "--metric", "l2", "--json", "-", "-q")
    doc = json.loads(out)["comparison"]
    assert doc["same_thresholds"] is False and doc["mode"] == "own-range"
    # each on its own range from the same FAR bounds, as meant: no warning about it
    assert not any("calibration ranges" in w for w in doc["warnings"])
    # --own-range is kept as a deprecated spelling of the default
    code, out2, _ = run(capsys, "compare", a, b, "--metric", "l2", "--own-range", "--json", "-",
                        "-q")
    assert code == 0 and json.loads(out2)["comparison"]["mode"] == "own-range"


def test_report_escapes_labels(two_small_models, capsys, isolated):
    a, b = two_small_models
    code, _, _ = run(capsys, "compare", a, b, "--report", "r", "-q")
    assert code == 0
    html = (isolated / "r" / "compare.html").read_text()
    assert "&lt;b&gt;c0&amp;" in html and "<b>c0&" not in html


def test_report_figures_are_titled_with_units(samples):
    from opis_cli.render.report.compare import all_figures

    w, s = read_result(samples.weak_json), read_result(samples.strong_json)
    cmp = compare_results(w, s, baseline_name="weak.json", candidate_name="strong.json")
    figs = all_figures(cmp, w, s)
    for name, fig in figs.items():
        assert fig._suptitle is not None and fig._suptitle.get_text(), name
    axes = figs["mean_utility"].axes   # on different thresholds: one panel per model
    assert all("cosine distance" in ax.get_xlabel() for ax in axes)
    gids = {line.get_gid() for ax in axes for line in ax.get_lines()}
    assert {"baseline-mean-curve", "candidate-mean-curve"} <= gids
    # results read from JSON hold no per-class curves: no empty panels (test_report_figures)
    assert "class_curves" not in figs


def test_compare_json_is_deterministic(samples, capsys, isolated):
    outs = [run(capsys, "compare", samples.weak_json, samples.strong_json, "--json", "-",
                "-q")[1] for _ in range(2)]
    assert outs[0] == outs[1]
    doc = json.loads(outs[0])
    assert doc["gate"] is None
    assert {"baseline", "candidate", "metrics", "classes", "warnings", "intervals",
            "same_thresholds"} <= set(doc["comparison"])
    assert doc["comparison"]["intervals"][0]["method"] == "paired"


def test_compare_terminal_tables(samples, capsys, isolated):
    code, out, _ = run(capsys, "compare", samples.strong_json, samples.weak_json, "--top", "3")
    assert code == 0
    assert "Classes that got most worse" in out
    worst = re.findall(r"digit_\d", out.split("Classes that got most worse")[1])
    assert len(set(worst[:3])) == 3


@pytest.mark.parametrize("args,needle", [
    (["--max", "opsi=1"], "unknown metric"),
    (["--junit", "x.xml"], "--junit needs gate rules"),
    (["--top", "-1"], "--top"),
    (["--gate"], "no gate rules found"),
])
def test_compare_usage_errors(samples, capsys, isolated, args, needle):
    code, out, err = run(capsys, "compare", samples.weak_json, samples.strong_json, *args)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], err


def test_compare_missing_side(samples, capsys, isolated):
    code, _, err = run(capsys, "compare", samples.weak_json, "nope.json")
    assert code == 2 and "nope.json" in err


# ------------------------------------------------------------------ fairness (SPEC 13)

FAIR_KEYS = ("far_ratio", "frr_ratio", "fdr", "garbe", "inequity_rate", "fdr_mean", "garbe_mean")


def test_fairness_metrics_in_the_comparison_with_their_direction(samples):
    w, s = read_result(samples.weak_json), read_result(samples.strong_json)
    cmp = compare_results(w, s, baseline_name="weak", candidate_name="strong")
    names = [m.name for m in cmp.metrics]
    assert names[-len(FAIR_KEYS):] == list(FAIR_KEYS)  # after the headline
    bf, cf = w.fairness_metrics(), s.fairness_metrics()
    for k in FAIR_KEYS:
        m = cmp.metric(k)
        assert (m.baseline, m.candidate) == (bf[k], cf[k])
    # higher FDR is fairer, lower GARBE / ratios / inequity is fairer
    for k, sign in (("fdr", 1), ("fdr_mean", 1), ("garbe", -1), ("garbe_mean", -1),
                    ("far_ratio", -1), ("frr_ratio", -1), ("inequity_rate", -1)):
        m = cmp.metric(k)
        want = "better" if (m.candidate - m.baseline) * sign > 0 else "worse"
        assert m.verdict == want, k
    back = compare_results(s, w)
    assert back.metric("fdr").verdict == ("worse" if cmp.metric("fdr").verdict == "better"
                                          else "better")
    md = markdown(cmp)
    for k in FAIR_KEYS:
        row = next(ln for ln in md.splitlines() if ln.startswith(f"| {label(k)} |"))
        assert row.endswith(f"| {cmp.metric(k).verdict} |")
    assert f"| {label('fdr')} | {bf['fdr']:.4g} | {cf['fdr']:.4g} |" in md


def test_fairness_metrics_left_out_for_results_without_them(samples):
    doc = json.loads(samples.weak_json.read_text())
    del doc["fairness"], doc["recommended_threshold"]["fairness"]
    from opis_cli import EvaluationResult

    old = EvaluationResult.from_dict(doc)
    cmp = compare_results(old, read_result(samples.strong_json))
    assert not {m.name for m in cmp.metrics} & set(FAIR_KEYS)
    assert cmp.metric("opis").verdict == "better"


def test_fairness_nulls_have_no_verdict(samples):
    from dataclasses import replace

    w = read_result(samples.weak_json)
    rt = w.recommended_threshold
    nulls = replace(rt.fairness, inequity_rate=None, far_ratio=None)
    old = replace(w, classes=replace(w.classes,
                                     recommended_threshold=replace(rt, fairness=nulls)))
    cmp = compare_results(old, w)
    assert cmp.metric("inequity_rate").verdict == "" and cmp.metric("far_ratio").verdict == ""
    assert cmp.metric("fdr").verdict == "same"
    row = next(ln for ln in markdown(cmp).splitlines() if ln.startswith(f"| {label('inequity_rate')} |"))
    assert row.startswith(f"| {label('inequity_rate')} | n/a |")
    assert cmp.to_dict()["metrics"][[m.name for m in cmp.metrics].index("far_ratio")][
        "baseline"] is None


def test_compare_and_gate_markdown_list_the_fairness_metrics(samples, capsys, isolated):
    code, out, err = run(capsys, "compare", samples.weak_json, samples.strong_json,
                         "--max", "garbe=1", "--json", "-", "--markdown", "cmp.md")
    assert code == 0, err
    doc = json.loads(out)
    got = {m["metric"] for m in doc["comparison"]["metrics"]}
    assert set(FAIR_KEYS) <= got
    md = (isolated / "cmp.md").read_text()
    assert "| GARBE |" in md and "| FDR over the range (fdr_mean) |" in md
    assert "GARBE over the range" in err  # the terminal's headline table, by name
    code, _, err = run(capsys, "gate", samples.weak_json, "--max", "opis=1", "--markdown",
                       "gate.md", "--no-config")
    assert code == 0, err
    gate_md = (isolated / "gate.md").read_text()
    details = gate_md[gate_md.index("Headline metrics"):]
    f = read_result(samples.weak_json).fairness_metrics()
    assert f"| fdr | {f['fdr']:.6g} |" in details and "| inequity_rate |" in details
