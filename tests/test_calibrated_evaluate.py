"""``opis evaluate --calibration`` (SPEC 11): every number on ``d' = d - a_q - b_g``.

The naive reference (tests/reference.py) takes the adjusted distance matrix
``D - a[:, None] - b[None, :]``; integer l2 inputs with offsets that are
multiples of 1/8 make float32 products exact, so those comparisons are exact
(ties created by the offsets included); cosine inputs agree at 1e-6.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import reference as ref
from data_gen import gaussian, integer_rows
from opis_cli import evaluate
from opis_cli.api import operating_point
from opis_cli.calibration import Offsets, fit
from opis_cli.cli import main
from ref_compare import compare, options_for, well_conditioned


class Fixed:
    """A calibration with given per-row offsets (the engine sees only ``offsets``)."""

    method = "fixed"
    centroids = None
    target_far = 0.1
    global_threshold = 0.0

    def __init__(self, a, b, metric):
        self.a, self.b, self.metric = np.asarray(a, float), np.asarray(b, float), metric

    def offsets(self, embeddings, labels, groups):
        return Offsets(self.a, self.b, 0)


def offsets(seed, n, kind):
    """Offsets of both signs on a 1/8 grid: per-class-like (b = 0), symmetric
    (a = b, the cluster form) or independent."""
    rng = np.random.default_rng(seed)
    a = rng.integers(-4, 5, n) / 8
    if kind == "query":
        return a, np.zeros(n)
    if kind == "symmetric":
        return a, a.copy()
    return a, rng.integers(-4, 5, n) / 8


def adjusted(x, metric, a, b):
    return ref.distance_matrix(x, metric) - a[:, None] - b[None, :]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("kind", ["query", "symmetric", "both"])
def test_integer_l2_with_offsets_is_exact(seed, kind):
    x, y = integer_rows(seed)
    a, b = offsets(seed, len(y), kind)
    opts = dict(options_for(seed), metric="l2")
    if seed % 2:
        opts["calibration_range"] = (0.5, 3.0)  # grid on multiples of 1/8 around the ties
    res = evaluate(x, y, calibration=Fixed(a, b, "l2"), timestamp=False, **opts)
    r = ref.evaluate(x, y, distances=adjusted(x, "l2", a, b), **opts)
    compare(res, r, rel=1e-9)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("kind", ["query", "symmetric", "both"])
def test_cosine_with_offsets(seed, kind):
    opts = dict(options_for(seed), metric="cosine")

    def run_ref(case):
        x, y = case
        a, b = offsets(seed, len(y), kind)
        return ref.evaluate(x, y, distances=adjusted(x, "cosine", a / 10, b / 10), **opts)

    (x, y), r = well_conditioned(lambda s: gaussian(s, singletons=s % 2), 50 * seed + 3, run_ref)
    a, b = offsets(seed, len(y), kind)
    res = evaluate(x, y, calibration=Fixed(a / 10, b / 10, "cosine"), timestamp=False, **opts)
    compare(res, r, rel=1e-6)


def test_query_gallery_split_and_groups_with_offsets():
    x, y = integer_rows(3)
    n = len(y)
    rng = np.random.default_rng(0)
    isq = rng.random(n) < 0.7
    isg = ~isq | (rng.random(n) < 0.5)
    groups = [f"g{i % 3}" for i in range(n)]
    a, b = offsets(1, n, "both")
    res = evaluate(x, y, groups=groups, is_query=isq, is_gallery=isg, metric="l2",
                   calibration=Fixed(a, b, "l2"), timestamp=False)
    r = ref.evaluate(x, y, groups=groups, is_query=isq, is_gallery=isg, metric="l2",
                     distances=adjusted(x, "l2", a, b))
    compare(res, r, rel=1e-9)


def test_zero_offsets_change_nothing_but_the_provenance():
    x, y = gaussian(4)
    z = np.zeros(len(y))
    plain = json.loads(evaluate(x, y, timestamp=False).to_json())
    cal = json.loads(evaluate(x, y, calibration=Fixed(z, z, "cosine"), timestamp=False).to_json())
    assert cal["provenance"].pop("calibration")["method"] == "fixed"
    cal["options"].pop("calibration")
    cal["provenance"]["options"].pop("calibration")
    assert cal == plain


def test_fitted_calibration_matches_its_own_deployment_decisions():
    """What was measured is what ships: the evaluation's accept counts at the
    global threshold equal the deployment API's decisions, pair by pair summed."""
    x, y = integer_rows(5)
    cal = fit(x, y, method="per-class", target="far:0.1", metric="l2")
    op = operating_point(x, y, cal.global_threshold, metric="l2", calibration=cal)
    acc = cal.accept(x, x, query_labels=y)
    np.fill_diagonal(acc, False)
    lab = np.asarray(y)
    same = lab[:, None] == lab[None, :]
    np.fill_diagonal(same, False)
    other = ~same & ~np.eye(len(y), dtype=bool)
    assert op.tpr == acc[same].sum() / same.sum()
    assert op.far == acc[other].sum() / other.sum()


def test_calibrated_class_far_meets_the_target_on_the_fitting_data():
    """per-class at F: on the data it was fitted on, every class's FAR at the
    global threshold is F up to one pair: its own theta_c moved to theta_G,
    where the order-statistic pair itself may round to either side of
    ``d - (theta_c - theta_G) <= theta_G`` (continuous data: no other ties)."""
    x, y = gaussian(6, n=300)
    cal = fit(x, y, method="per-class", target="far:0.05")
    res = evaluate(x, y, calibration=cal, threshold_policy="max-mean-utility",
                   calibration_range=(cal.global_threshold - 0.05, cal.global_threshold))
    assert res.thresholds[-1] == cal.global_threshold
    cv = res.classes.curves
    for lab, fp, m in zip(cv.labels, cv.fp[:, -1], cv.negatives):
        r = int(np.ceil(0.05 * m - 1e-9))
        assert r - 1 <= fp <= r, lab
    plain = evaluate(x, y, calibration_range=(cal.global_threshold - 0.05,
                                              cal.global_threshold))
    spread = lambda res: np.ptp(res.classes.curves.fp[:, -1] / res.classes.curves.negatives)  # noqa: E731
    assert spread(res) < spread(plain) / 5  # one threshold now fits every class


# -- the command line --------------------------------------------------------------------
def run(capsys, *args):
    capsys.readouterr()
    code = main([str(v) for v in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def files(tmp_path):
    x, y = integer_rows(2)
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "y.txt").write_text("\n".join(y) + "\n")
    return tmp_path


def test_cli_fit_then_evaluate_records_the_file(capsys, files):
    d = files
    code, _, err = run(capsys, "calibrate", d / "x.npy", "--labels", d / "y.txt", "--metric",
                       "l2", "--method", "per-class", "--target", "far:0.1", "--out",
                       d / "cal.json")
    assert code == 0, err
    code, out, err = run(capsys, "evaluate", d / "x.npy", "--labels", d / "y.txt", "--metric",
                         "l2", "--calibration", d / "cal.json", "--json", "-")
    assert code == 0, err
    prov = json.loads(out)["provenance"]["calibration"]
    import hashlib

    assert prov["sha256"] == hashlib.sha256((d / "cal.json").read_bytes()).hexdigest()
    assert prov["method"] == "per-class" and prov["uncalibrated_rows"] == 0
    assert "Calibration per-class" in err.replace("\n", " ")  # --json -: tables on stderr


@pytest.mark.parametrize("edit,text", [
    (lambda d: d.update(metric="cosine"), "fitted with --metric cosine"),
    (lambda d: d.update(version=9), "calibration file version 9 is not supported"),
    (lambda d: d.update(schema="nope"), "not an opis calibration file"),
    (lambda d: d["thresholds"].update({"": 0.5}), "every entry needs a non-empty label"),
    (lambda d: d.update(method="cluster:2", thresholds=[1, 1], centroids=[[1.0] * 3] * 2,
                        dim=3), "the centroids have 3 dimensions, the embeddings"),
    (lambda d: d.update(method="cluster:2", thresholds=[1, 1], centroids=[[1.0] * 3] * 2),
     "dim 2 differs from the centroids' 3 columns"),
])
def test_cli_bad_calibration_files(capsys, files, edit, text):
    d = files
    assert run(capsys, "calibrate", d / "x.npy", "--labels", d / "y.txt", "--metric", "l2",
               "--method", "per-class", "--out", d / "cal.json", "-q")[0] == 0
    doc = json.loads((d / "cal.json").read_text())
    edit(doc)
    (d / "bad.json").write_text(json.dumps(doc))
    code, out, err = run(capsys, "evaluate", d / "x.npy", "--labels", d / "y.txt", "--metric",
                         "l2", "--calibration", d / "bad.json", "--json", d / "r.json")
    assert code == 2 and text in err and err.count("\n") == 1, err
    assert not (d / "r.json").exists()
