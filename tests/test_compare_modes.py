"""``opis compare``'s three views: each model on its own FAR range (the default),
``--same-thresholds``, and the deployment view (both models at the baseline's
deployed threshold), with its ``deployed_*`` gate metrics.

The deployment view's counts are checked against a naive float64 numpy count
of the pairs at distance ``<= T`` (SPEC 3); the modes on synthetic models
whose distances are an exact multiple of each other (same ranking, other
distance scale).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from gating_samples import SAMPLE, STRONG, WEAK, run
from opis_cli.api import operating_point


def naive_rates(emb: np.ndarray, labels, t: float, metric: str = "cosine"):
    """Global FAR and TPR at distance threshold ``t``, all pairs in float64 (self excluded)."""
    x = np.asarray(emb, np.float64)
    if metric == "cosine":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        d = 1.0 - x @ x.T
    else:
        d = np.sqrt(np.maximum(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1), 0))
    lab = np.asarray(labels)
    neg = lab[:, None] != lab[None, :]
    pos = ~neg
    np.fill_diagonal(pos, False)
    return float((d[neg] <= t).sum() / neg.sum()), float((d[pos] <= t).sum() / pos.sum())


@pytest.fixture(scope="module")
def weak_to_strong(tmp_path_factory):
    """The default comparison of the shipped samples, weak -> strong (JSON and Markdown)."""
    import contextlib
    import io

    from opis_cli.cli import main

    d = tmp_path_factory.mktemp("weak_to_strong")
    err = io.StringIO()  # the tables: on stdout since the outputs are files
    with contextlib.redirect_stdout(err):
        code = main(["compare", str(WEAK), str(STRONG), "--json", str(d / "c.json"),
                     "--markdown", str(d / "c.md"), "--max", "deployed_far=0.2"])
    return code, json.loads((d / "c.json").read_text()), (d / "c.md").read_text(), err.getvalue()


def test_default_headline_and_classes_agree(weak_to_strong):
    _, doc, md, _ = weak_to_strong
    cmp = doc["comparison"]
    assert cmp["mode"] == "own-range" and cmp["headline_vs_classes"] is None
    opis = next(m for m in cmp["metrics"] if m["metric"] == "opis")
    assert opis["verdict"] == "better"
    changes = [c["mean_utility_change"] for c in cmp["classes"]["changes"]]
    assert len(changes) == 10 and sum(c > 0 for c in changes) > sum(c < 0 for c in changes)
    assert "each on its own FAR range" in md


def test_deployment_view_is_the_candidate_at_the_baseline_threshold(weak_to_strong):
    code, doc, md, err = weak_to_strong
    dep = doc["comparison"]["deployment"]
    weak_doc_t = dep["baseline"]["threshold"]
    assert dep["source"] == "baseline recommended" and dep["threshold"] == weak_doc_t
    labels = (SAMPLE / "digits_labels.txt").read_text().split()
    far, tpr = naive_rates(np.load(SAMPLE / "digits_strong.npy"), labels, dep["threshold"])
    assert dep["candidate"]["far"] == pytest.approx(far, abs=1e-6)
    assert dep["candidate"]["tpr"] == pytest.approx(tpr, abs=1e-6)
    assert dep["candidate"]["far"] > 0.3            # the strong model accepts far more
    assert dep["baseline"]["far"] == pytest.approx(0.1, abs=1e-6)
    assert dep["far_ratio"] == pytest.approx(dep["candidate"]["far"] / dep["baseline"]["far"])
    for side in ("baseline", "candidate"):
        s = dep[side]["far_spread"]
        assert s["min"] <= s["p5"] <= s["p50"] <= s["p95"] <= s["max"]
    assert "Deployment view" in err and "raises the global FAR" in err
    assert "**Deployment view: both models at threshold" in md and "| global FAR |" in md
    # --max deployed_far=0.2 breaks: the swap would break the deployed operating point
    assert code == 1
    (r,) = doc["gate"]["results"]
    assert r["metric"] == "deployed_far" and r["passed"] is False
    assert r["value"] == dep["candidate"]["far"]


def test_operating_point_matches_a_naive_count():
    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(4), 15)
    x = (rng.normal(size=(4, 5))[y] + 0.8 * rng.normal(size=(60, 5))).astype(np.float32)
    for metric, t in (("cosine", 0.4), ("l2", 1.7)):
        op = operating_point(x, y, t, metric=metric)
        far, tpr = naive_rates(x, y, t, metric)
        assert (op.far, op.tpr) == (pytest.approx(far, abs=1e-12), pytest.approx(tpr, abs=1e-12))
        assert op.frr == pytest.approx(1 - tpr)


def test_deployed_rules_and_a_user_threshold(samples, capsys, isolated):
    # --threshold: both embeddings sides measured exactly at the given distance
    code, out, _ = run(capsys, "compare", WEAK, STRONG, "--threshold", "0.15",
                       "--max-increase", "deployed_far=0", "--json", "-", "-q")
    dep = json.loads(out)["comparison"]["deployment"]
    labels = (SAMPLE / "digits_labels.txt").read_text().split()
    assert dep["source"] == "--threshold" and dep["threshold"] == 0.15
    for side, f in (("baseline", "digits_weak.npy"), ("candidate", "digits_strong.npy")):
        far, _ = naive_rates(np.load(SAMPLE / f), labels, 0.15)
        assert dep[side]["far"] == pytest.approx(far, abs=1e-6)
    assert code == (1 if dep["candidate"]["far"] > dep["baseline"]["far"] else 0)
    # a result JSON candidate without curves: no deployment view, said in one line
    code, out, err = run(capsys, "compare", samples.weak_json, samples.strong_json, "--json",
                         "-")
    assert code == 0
    dep = json.loads(out)["comparison"]["deployment"]
    assert dep["candidate"] is None and "needs the candidate's embeddings" in dep["missing"]
    assert "Deployment view: not shown" in err
    # ... and a deployed_* rule on it is an input error (exit 2), not a silent pass
    code, _, err = run(capsys, "compare", samples.weak_json, samples.strong_json,
                       "--max", "deployed_far=0.5")
    assert code == 2 and "needs the candidate's embeddings" in err
    # opis gate alone has no deployment view
    code, _, err = run(capsys, "gate", samples.strong_json, "--max", "deployed_far=0.5")
    assert code == 2 and "opis compare only" in err and err.count("\n") == 1


def test_deployment_view_in_the_report(samples, capsys, isolated):
    code, _, _ = run(capsys, "compare", samples.weak_json, STRONG, "--report", "rep", "-q")
    assert code == 0
    html = (isolated / "rep" / "compare.html").read_text()
    assert "Deployment view: both models at threshold 0.6053 (baseline recommended)" in html
    assert "<td>global FAR</td><td>10.00%</td><td>95.42%</td>" in html
    assert "raises the global FAR" in html


def test_a_model_against_itself(samples, capsys, isolated):
    code, out, err = run(capsys, "compare", WEAK, WEAK, "--max-increase", "deployed_far=0",
                         "--max-increase", "deployed_far_ratio=0", "--max-increase", "opis=0",
                         "--json", "-")
    assert code == 0, err
    cmp = json.loads(out)["comparison"]
    assert cmp["warnings"] == [] and cmp["headline_vs_classes"] is None
    dep = cmp["deployment"]
    assert dep["baseline"] == dep["candidate"] and dep["far_ratio"] == 1.0
    assert "raises the global FAR" not in err
    # result JSONs with their curves: the baseline threshold lies on the candidate's grid
    code, out, _ = run(capsys, "compare", samples.strong_json, samples.strong_json,
                       "--candidate-curves", samples.strong_curves, "--json", "-", "-q")
    dep = json.loads(out)["comparison"]["deployment"]
    assert code == 0 and dep["candidate"]["far"] == dep["baseline"]["far"]


@pytest.fixture(scope="module")
def scaled_models(tmp_path_factory):
    """Two 'models' ranking every pair alike, the second's l2 distances 4x the first's."""
    d = tmp_path_factory.mktemp("scaled")
    rng = np.random.default_rng(5)
    y = np.repeat(np.arange(6), 25)
    x = (rng.normal(size=(6, 8))[y] + 0.9 * rng.normal(size=(150, 8))).astype(np.float32)
    labels = np.array([f"c{v}" for v in y])
    a, b = d / "a.npz", d / "b.npz"
    np.savez(a, embeddings=x, labels=labels)
    np.savez(b, embeddings=4 * x, labels=labels)    # exact in float32: same ranking, 4x distances
    return a, b, x, labels


def test_shifted_scale_own_range_is_right_same_thresholds_is_the_pitfall(scaled_models, capsys,
                                                                          isolated):
    a, b, x, labels = scaled_models
    code, out, err = run(capsys, "compare", a, b, "--metric", "l2", "--json", "-")
    cmp = json.loads(out)["comparison"]
    assert code == 0 and cmp["mode"] == "own-range" and cmp["warnings"] == []
    # the same model up to the distance unit: the same OPIS and class utilities
    for m in cmp["metrics"]:
        if m["metric"] != "threshold":
            assert m["candidate"] == pytest.approx(m["baseline"], rel=1e-9, abs=1e-12), m
    assert all(abs(c["mean_utility_change"]) < 1e-9 for c in cmp["classes"]["changes"])
    assert cmp["headline_vs_classes"] is None
    # ... but deploying the old threshold on the new model accepts far fewer pairs
    dep = cmp["deployment"]
    far, tpr = naive_rates(4 * x.astype(np.float64), labels, dep["threshold"], "l2")
    assert dep["candidate"]["far"] == pytest.approx(far, abs=1e-9)
    assert dep["candidate"]["far"] < dep["baseline"]["far"] / 2
    assert "lowers the global FAR" in err

    code, out, err = run(capsys, "compare", a, b, "--metric", "l2", "--same-thresholds",
                         "--json", "-")
    cmp = json.loads(out)["comparison"]
    assert cmp["mode"] == "same-thresholds" and cmp["same_thresholds"] is True
    assert any("accept very different shares" in w for w in cmp["warnings"])
    assert "drop --same-thresholds" in err
    opis = next(m for m in cmp["metrics"] if m["metric"] == "opis")
    assert opis["candidate"] != pytest.approx(opis["baseline"], rel=1e-3)
