"""Calibrations (SPEC 11): fitted thresholds against a direct computation, the file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from opis_cli.calibration import (Calibration, calibration_from_dict, fit, fit_many,
                                  load_calibration, parse_method)
from opis_cli.errors import ConfigError, InputError
from test_calibrate import float_data, integer_data
from transfer_reference import distances, fitted_thresholds


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("F", [0.01, 0.05, 0.3])
def test_fitted_thresholds_equal_a_direct_computation(seed, F):
    X, lab = integer_data(seed, n=150)
    rng = np.random.default_rng(seed)
    grp = np.array([f"g{v}" for v in rng.integers(0, 5, len(lab))])
    cals = fit_many(X, lab, ["global", "per-class", "per-group", "cluster:4"], target_far=F,
                    metric="l2", groups=grp, seed=seed)
    D = distances(X, "l2")
    tg, per_class = fitted_thresholds(D, lab, lab, F)
    _, per_group = fitted_thresholds(D, lab, grp, F)
    assert all(c.global_threshold == tg for c in cals)
    assert cals[1].thresholds == per_class
    assert cals[2].thresholds == per_group
    k = cals[3].assign(X)
    _, per_cent = fitted_thresholds(D, lab, k, F)
    assert cals[3].thresholds == tuple(per_cent.get(str(i)) for i in range(4))


def test_query_gallery_split_and_cosine():
    X, lab = float_data(3, n=200)
    rng = np.random.default_rng(0)
    isq = rng.random(len(lab)) < 0.7
    isg = ~isq | (rng.random(len(lab)) < 0.5)
    cal = fit(X, lab, method="per-class", target="far:0.05", is_query=isq, is_gallery=isg)
    tg, per = fitted_thresholds(distances(X, "cosine"), lab, lab, 0.05, isq, isg)
    assert cal.global_threshold == pytest.approx(tg, abs=2e-6)
    assert sorted(cal.thresholds) == sorted(per)
    for c, v in per.items():
        assert cal.thresholds[c] == pytest.approx(v, abs=2e-6)


def test_offsets_follow_spec_11():
    X, lab = integer_data(1, n=150)
    cal = fit(X, lab, method="per-class", target="far:0.1", metric="l2")
    new = np.array(list(lab[:5]) + ["never seen"])
    off = cal.offsets(None, new)
    assert off.uncalibrated == 1 and off.a[-1] == 0.0 and not off.b.any()
    assert off.a[0] == cal.thresholds[str(lab[0])] - cal.global_threshold
    cl = fit(X, lab, method="cluster:3", target="far:0.1", metric="l2", seed=2)
    o = cl.offsets(X)
    k = cl.assign(X)
    th = np.array([np.nan if v is None else v for v in cl.thresholds])
    want = np.nan_to_num((th[k] - cl.global_threshold) / 2)
    assert np.array_equal(o.a, want) and np.array_equal(o.b, want)


def test_kmeans_is_seeded_and_independent_of_threads():
    import faiss

    X, lab = float_data(2, n=300)
    a = fit(X, lab, method="cluster:5", seed=7)
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(2)
    try:
        b = fit(X, lab, method="cluster:5", seed=7)
    finally:
        faiss.omp_set_num_threads(before)
    assert a.to_json() == b.to_json()
    assert fit(X, lab, method="cluster:5", seed=8).to_json() != a.to_json()


@pytest.mark.parametrize("method", ["global", "per-class", "per-group", "cluster:3"])
def test_file_round_trip(tmp_path, method):
    X, lab = integer_data(2, n=150)
    grp = np.array([f"g{i % 3}" for i in range(len(lab))])
    cal = fit(X, lab, method=method, target="far:0.05", metric="l2", groups=grp)
    p = tmp_path / "cal.json"
    p.write_text(cal.to_json())
    back, prov = load_calibration(p)
    assert back.to_json() == cal.to_json()
    assert prov["method"] == method and len(prov["sha256"]) == 64


def test_deployment_decisions_match_the_offsets():
    X, lab = integer_data(3, n=120)
    cal = fit(X, lab, method="per-class", target="far:0.05", metric="l2")
    dprime = cal.adjusted_distances(X, X, query_labels=lab)
    D = distances(X, "l2")
    a = cal.offsets(None, lab).a
    assert np.array_equal(dprime, D - a[:, None])
    assert np.array_equal(cal.accept(X, X, query_labels=lab), dprime <= cal.global_threshold)


@pytest.mark.parametrize("edit,text", [
    (lambda d: d.update(schema="other"), "not an opis calibration file"),
    (lambda d: d.update(version=2), "version 2 is not supported"),
    (lambda d: d.update(method="per-thing"), "unknown method"),
    (lambda d: d.update(metric="dot"), "metric \"dot\""),
    (lambda d: d["thresholds"].update({"": 1.0}), "every entry needs a non-empty label"),
    (lambda d: d["thresholds"].update({"x": "far"}), "the threshold of \"x\" must be a finite"),
    (lambda d: d.update(global_threshold=None), "global_threshold must be a finite number"),
])
def test_bad_files_get_one_line(edit, text):
    X, lab = integer_data(2, n=150)
    d = fit(X, lab, method="per-class", metric="l2").to_dict()
    edit(d)
    with pytest.raises(InputError, match=text) as e:
        calibration_from_dict(d, "cal.json")
    assert "\n" not in str(e.value) and str(e.value).startswith("cal.json: ")


def test_bad_cluster_file_and_methods():
    X, lab = integer_data(2, n=150)
    d = fit(X, lab, method="cluster:3", metric="l2").to_dict()
    d["centroids"] = d["centroids"][:2]
    with pytest.raises(InputError, match="needs \"centroids\": 3 rows"):
        calibration_from_dict(d)
    with pytest.raises(ConfigError, match="cluster:0"):
        parse_method("cluster:0")
    with pytest.raises(ConfigError, match="expected one of global"):
        parse_method("per-row")
    with pytest.raises(ConfigError, match="needs a group column"):
        fit(X, lab, method="per-group")
    assert isinstance(Calibration("global", "cosine", 0.1, 0.5), Calibration)
