"""``opis calibrate`` (SPEC 12): the fast two-pass transfer against a naive reference.

Integer embeddings with ``--metric l2`` have exact float32 products, so the
engine and the float64 reference must agree exactly there, ties included;
cosine inputs agree within what float32 rounding can move (the pairs within
1e-6 of a threshold).
"""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest

from opis_cli.errors import ConfigError, InputError
from opis_cli.transfer import Data, calibrate, fold_of, row_folds
from transfer_reference import (distances, fitted_thresholds, folds_of, group_rates, near,
                                rows_of, transfer, transfer_sides)


def integer_data(seed, n=160, C=24, d=6, singletons=2, dup=0.1):
    """Small integer l2 data: exact products, many tied distances, duplicated
    rows, singleton classes and unbalanced class sizes."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 12, C)
    sizes[:singletons] = 1
    lab = np.repeat([f"c{i}" for i in range(C)], sizes)[:n]
    centres = rng.integers(-3, 4, (C, d))
    X = centres[[int(s[1:]) for s in lab]] + rng.integers(-1, 2, (len(lab), d))
    k = int(dup * len(lab))
    X[rng.choice(len(lab), k)] = X[rng.choice(len(lab), k)]  # duplicates: distance 0
    perm = rng.permutation(len(lab))
    return X[perm].astype(np.float32), lab[perm]


def float_data(seed, n=240, C=30, d=12):
    rng = np.random.default_rng(seed)
    lab = np.array([f"k{v}" for v in rng.integers(0, C, n)])
    centres = rng.normal(size=(C, d))
    X = centres[[int(s[1:]) for s in lab]] + rng.normal(size=(n, d)) * rng.uniform(0.5, 1.5)
    return X.astype(np.float32), lab


def fold_dicts(res):
    return res.to_dict()["transfer"]["folds"]


def check_exact(got, ref):
    cal, tst = got["calibration"], got["test"]
    for k in ("classes", "evaluated_classes", "rows", "threshold", "far", "tpr"):
        assert cal[k] == ref["calibration"][k], k
    for k in ("classes", "evaluated_classes", "rows", "far", "tpr", "oracle_threshold",
              "oracle_tpr", "oracle_far", "fraction_far_above_2x"):
        assert tst[k] == ref["test"][k], k
    for k in ("far_spread", "frr_spread"):
        assert tst[k] == pytest.approx(ref["test"][k], abs=1e-15)
    per = {c["label"]: (c["far"], c["frr"]) for c in tst["per_class"]}
    assert per == ref["test"]["per_class"]


# -- the fold assignment ------------------------------------------------------------
def test_fold_assignment_is_spec_12_written_out():
    names = ["b", "a", "ü", "class 10", "c"]
    order = sorted(names, key=lambda n: (zlib.crc32(f"7:{n}".encode()), n))
    assert fold_of(names, 2, 7) == {n: i % 2 for i, n in enumerate(order)}
    assert fold_of(names * 3, 3, 0) == folds_of(names, 3, 0)


def test_folds_are_balanced_and_change_with_the_seed():
    names = [f"n{i}" for i in range(101)]
    sizes = np.bincount(list(fold_of(names, 5, 0).values()))
    assert sizes.max() - sizes.min() <= 1
    assert fold_of(names, 5, 0) != fold_of(names, 5, 1)


# -- exact agreement with the reference ---------------------------------------------------
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("K,F", [(5, 0.01), (3, 0.1), (4, 0.37)])
def test_integer_l2_folds_equal_the_reference_exactly(seed, K, F):
    X, lab = integer_data(seed)
    got = fold_dicts(calibrate(Data(X, lab), folds=K, seed=seed, target=f"far:{F}",
                               metric="l2", timestamp=False))
    ref = transfer(X, lab, K=K, seed=seed, F=F, metric="l2")
    assert len(got) == K
    for g, r in zip(got, ref):
        check_exact(g, r)


@pytest.mark.parametrize("seed", range(4))
def test_query_gallery_split_equals_the_reference(seed):
    X, lab = integer_data(seed + 10, n=180)
    rng = np.random.default_rng(seed)
    isq = rng.random(len(lab)) < 0.6
    isg = ~isq | (rng.random(len(lab)) < 0.5)
    got = fold_dicts(calibrate(Data(X, lab, is_query=isq, is_gallery=isg), folds=3, seed=1,
                               target="far:0.05", metric="l2", timestamp=False))
    ref = transfer(X, lab, K=3, seed=1, F=0.05, metric="l2", is_query=isq, is_gallery=isg)
    for g, r in zip(got, ref):
        check_exact(g, r)


@pytest.mark.parametrize("seed", range(4))
def test_group_split_equals_the_reference(seed):
    """Groups split into folds: a class may have rows in several folds, so it
    can be evaluated on one side and not on another (the engine's per-side path)."""
    X, lab = integer_data(seed + 20, n=200, C=18)
    rng = np.random.default_rng(seed)
    groups = np.array([f"g{v}" for v in rng.integers(0, 9, len(lab))])
    got = fold_dicts(calibrate(Data(X, lab, groups=groups), folds=3, seed=seed, split="groups",
                               target="far:0.02", metric="l2", timestamp=False))
    ref = transfer(X, lab, K=3, seed=seed, F=0.02, metric="l2", groups=groups)
    D = distances(X, "l2")
    fmap = folds_of(groups, 3, seed)
    fold = np.array([fmap[v] for v in groups])
    ones = np.ones(len(lab), bool)
    for k, (g, r) in enumerate(zip(got, ref)):
        check_exact(g, r)
        want = group_rates(D, lab, groups, np.nonzero(fold == k)[0],
                           r["calibration"]["threshold"], ones, ones)
        per = {x["label"]: (x["far"], x["frr"]) for x in g["test"]["groups"]["per_group"]}
        assert sorted(per) == sorted(want) and len(want) > 0
        for name, (far, frr) in want.items():
            assert per[name] == pytest.approx((far, frr), abs=1e-15)


@pytest.mark.parametrize("seed", range(4))
def test_row_split_equals_the_reference(seed):
    """--split rows: every class on both sides (the closed set); classes with fewer
    rows than folds leave some folds without them."""
    X, lab = integer_data(seed + 30, n=220)
    got = fold_dicts(calibrate(Data(X, lab), folds=4, seed=seed, split="rows",
                               target="far:0.04", metric="l2", timestamp=False))
    ref = transfer(X, lab, K=4, seed=seed, F=0.04, metric="l2", rows=True)
    for g, r in zip(got, ref):
        check_exact(g, r)
    assert rows_of(lab, 4, seed).tolist() == row_folds(lab, 4, seed).tolist()


@pytest.mark.parametrize("seed", range(5))
def test_cosine_folds_agree_within_float32_rounding(seed):
    X, lab = float_data(seed)
    got = fold_dicts(calibrate(Data(X, lab), folds=5, seed=seed, timestamp=False))
    ref = transfer(X, lab, K=5, seed=seed, F=0.01)
    for g, r in zip(got, ref):
        A, B = r["_sides"]
        assert g["calibration"]["threshold"] == pytest.approx(r["calibration"]["threshold"],
                                                              abs=2e-6)
        assert g["test"]["oracle_threshold"] == pytest.approx(r["test"]["oracle_threshold"],
                                                              abs=2e-6)
        t = r["calibration"]["threshold"]
        for who, per, key in ((g["calibration"], A, "calibration"), (g["test"], B, "test")):
            M = sum(len(n) for _, n in per.values())
            P = sum(len(p) for p, _ in per.values())
            slack = near([per], t, 2e-6)
            assert abs(who["far"] - r[key]["far"]) * M <= slack
            assert abs(who["tpr"] - r[key]["tpr"]) * P <= slack
            assert who["rows"] == r[key]["rows"] and who["classes"] == r[key]["classes"]


def test_two_files_give_the_matching_fold():
    X, lab = integer_data(3, n=200)
    res = calibrate(Data(X, lab), folds=4, seed=2, target="far:0.03", metric="l2",
                    timestamp=False)
    fmap = fold_of(lab, 4, 2)
    fold = np.array([fmap[v] for v in lab])
    for k, want in enumerate(fold_dicts(res)):
        a, b = fold != k, fold == k
        two = calibrate(Data(X[a], lab[a]), test=Data(X[b], lab[b]), target="far:0.03",
                        metric="l2", timestamp=False)
        got = fold_dicts(two)[0]
        assert got["fold"] == 0 and want["fold"] == k
        assert got["calibration"] == want["calibration"]
        assert got["test"] == want["test"]
    assert two.to_dict()["transfer"]["split"]["kind"] == "files"


@pytest.mark.parametrize("policy", ["max-mean-utility", "max-worst-utility"])
def test_policy_target_uses_each_sides_own_grid(policy):
    """A SPEC 6 policy picks its threshold on A's own grid (opis evaluate of A,
    itself checked against the naive reference elsewhere); B is counted there."""
    import opis_cli

    X, lab = integer_data(5, n=200)
    res = calibrate(Data(X, lab), folds=3, seed=0, target=policy, metric="l2",
                    num_thresholds=11, timestamp=False)
    fmap = fold_of(lab, 3, 0)
    fold = np.array([fmap[v] for v in lab])
    D = distances(X, "l2")
    ones = np.ones(len(lab), bool)
    for k, got in enumerate(fold_dicts(res)):
        a, b = fold != k, fold == k
        ta = opis_cli.evaluate(X[a], lab[a], metric="l2", num_thresholds=11,
                               threshold_policy=policy).recommended_threshold.value
        tb = opis_cli.evaluate(X[b], lab[b], metric="l2", num_thresholds=11,
                               threshold_policy=policy).recommended_threshold.value
        ref = transfer_sides(D, lab, np.nonzero(a)[0], np.nonzero(b)[0], None, ones, ones,
                             t_star=ta, t_oracle=tb)
        assert got["calibration"]["threshold"] == ta
        assert got["test"]["oracle_threshold"] == tb
        for side in ("calibration", "test"):
            assert got[side]["far"] == ref[side]["far"]
            assert got[side]["tpr"] == ref[side]["tpr"]
        assert got["test"]["fraction_far_above_2x"] == ref["test"]["fraction_far_above_2x"]
        assert got["test"]["oracle_tpr"] == ref["test"]["oracle_tpr"]


# -- independent of how the work is split --------------------------------------------------
def test_json_does_not_depend_on_block_size_or_threads():
    import numba

    X, lab = float_data(1, n=500, C=40)
    one = calibrate(Data(X, lab), timestamp=False).to_json()
    small = calibrate(Data(X, lab), block_bytes=64 * 4 * 500, timestamp=False).to_json()
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        serial = calibrate(Data(X, lab), timestamp=False).to_json()
    finally:
        numba.set_num_threads(before)
    assert one == small == serial


def test_summary_is_over_the_test_sides():
    X, lab = integer_data(2)
    d = calibrate(Data(X, lab), folds=3, metric="l2", timestamp=False).to_dict()["transfer"]
    fars = [f["test"]["far"] for f in d["folds"]]
    tprs = [f["test"]["tpr"] for f in d["folds"]]
    assert d["summary"]["far"] == {"mean": np.mean(fars), "min": min(fars), "max": max(fars)}
    assert d["summary"]["tpr"] == {"mean": np.mean(tprs), "min": min(tprs), "max": max(tprs)}
    assert d["target"] == "far:0.01" and d["split"] == {"kind": "folds", "folds": 3, "seed": 0,
                                                        "by": "class"}


# -- bad input ---------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,err,text", [
    (dict(folds=1), ConfigError, "--folds must be at least 2"),
    (dict(folds=40), ConfigError, "only 24 classes"),
    (dict(target="far:0"), ConfigError, "--target far:0"),
    (dict(target="far:x"), ConfigError, "--target far:x"),
    (dict(target="best"), ConfigError, "expected far:F"),
])
def test_bad_options_get_one_line(kwargs, err, text):
    X, lab = integer_data(0)
    with pytest.raises(err, match=text.replace("(", r"\(")):
        calibrate(Data(X, lab), metric="l2", **kwargs)


def test_a_fold_with_one_class_names_the_fold():
    X, lab = integer_data(0, C=5, singletons=0)
    with pytest.raises(InputError, match=r"fold \d's test side .* use fewer --folds than 5"):
        calibrate(Data(X, lab), folds=5, metric="l2")


def test_a_test_file_without_negatives_is_refused():
    X, lab = integer_data(0)
    one = lab == lab[0]
    with pytest.raises(InputError, match="the test data .* need at least 2"):
        calibrate(Data(X, lab), test=Data(X[one], lab[one]), metric="l2")


# -- the command line ------------------------------------------------------------------------
def run_cli(capsys, *args):
    from opis_cli.cli import main

    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def npy_pair(tmp_path):
    """An integer l2 dataset as .npy + labels, and its fold-0 split as two such pairs."""
    X, lab = integer_data(4, n=200)
    np.save(tmp_path / "all.npy", X)
    (tmp_path / "all.txt").write_text("\n".join(lab) + "\n")
    fmap = fold_of(lab, 3, 0)
    fold = np.array([fmap[v] for v in lab])
    for name, m in (("a", fold != 0), ("b", fold == 0)):
        np.save(tmp_path / f"{name}.npy", X[m])
        (tmp_path / f"{name}.txt").write_text("\n".join(lab[m]) + "\n")
    return tmp_path


def test_cli_json_to_stdout_and_two_files_match_the_fold(capsys, npy_pair):
    d = npy_pair
    code, out, err = run_cli(capsys, "calibrate", d / "all.npy", "--labels", d / "all.txt",
                             "--metric", "l2", "--folds", "3", "--json", "-", "-q")
    assert code == 0, err
    folds = json.loads(out)["transfer"]["folds"]
    code, out, err = run_cli(capsys, "calibrate", d / "a.npy", "--labels", d / "a.txt",
                             "--test", d / "b.npy", "--test-labels", d / "b.txt",
                             "--metric", "l2", "--json", "-")
    assert code == 0, err
    two = json.loads(out)
    assert two["transfer"]["folds"][0]["test"] == folds[0]["test"]
    assert two["transfer"]["folds"][0]["calibration"] == folds[0]["calibration"]
    assert [s["path"] for s in two["provenance"]["inputs"]] == [
        str(d / n) for n in ("a.npy", "a.txt", "b.npy", "b.txt")]
    assert "Summary: target FAR 1.00% -> achieved" in err  # --json -: tables on stderr


@pytest.mark.parametrize("args,text", [
    (["--folds", "1"], "--folds must be at least 2, got 1"),
    (["--folds", "30"], "only 24 classes to split; use at most 24 folds"),
    (["--target", "far:2"], "--target far:2: F must be a number in (0, 1]"),
    (["--block-mib", "0"], "--block-mib must be a positive number of MiB"),
])
def test_cli_bad_input_is_one_line_exit_2_and_no_output(capsys, npy_pair, args, text):
    d = npy_pair
    out_json = d / "out.json"
    code, out, err = run_cli(capsys, "calibrate", d / "all.npy", "--labels", d / "all.txt",
                             "--metric", "l2", "--json", out_json, "--report", d / "rep", *args)
    assert code == 2
    assert err.count("\n") == 1 and text in err and "Traceback" not in err
    assert not out_json.exists() and not (d / "rep").exists()


# -- calibrations compared on the unseen side (SPEC 11 + 12) --------------------------------
def test_per_class_needs_the_row_split():
    X, lab = integer_data(0)
    with pytest.raises(ConfigError, match="--method per-class needs the same classes on both "
                                          "sides: use --split rows"):
        calibrate(Data(X, lab), metric="l2", methods=["per-class"])
    with pytest.raises(ConfigError, match="--method needs --target far:F"):
        calibrate(Data(X, lab), metric="l2", methods=["global"], target="max-mean-utility")


@pytest.mark.parametrize("seed", range(3))
def test_methods_on_the_unseen_side_equal_the_reference(seed):
    """Each method fitted on A (SPEC 11, written out in the reference) and applied to B:
    FAR, TPR and the share above 2x the target at the fitted global threshold, and OPIS
    of B on adjusted distances, against the naive reference; ``global`` is the plain
    transfer."""
    import reference as ref

    X, lab = integer_data(seed + 40, n=200, C=14, singletons=0)
    F = 0.05
    res = calibrate(Data(X, lab), folds=3, seed=seed, split="rows", target=f"far:{F}",
                    metric="l2", methods=["global", "per-class"], timestamp=False)
    fold = rows_of(lab, 3, seed)
    D = distances(X, "l2")
    for f in res.folds:
        glob, pc = f.methods
        assert glob.far == f.test.far and glob.tpr == f.test.tpr
        a_rows, b_rows = np.nonzero(fold != f.fold)[0], np.nonzero(fold == f.fold)[0]
        DA = D[np.ix_(a_rows, a_rows)]
        tg, theta = fitted_thresholds(DA, lab[a_rows], lab[a_rows], F)
        assert pc.global_threshold == tg
        a = np.array([theta[c] - tg if c in theta else 0.0 for c in lab[b_rows]])
        DB = D[np.ix_(b_rows, b_rows)] - a[:, None]
        ones = np.ones(len(b_rows), bool)
        r = transfer_sides(DB, lab[b_rows], range(len(b_rows)), range(len(b_rows)), F, ones,
                           ones, t_star=tg)
        assert pc.far == r["test"]["far"] and pc.tpr == r["test"]["tpr"]
        assert pc.fraction_far_above_2x == r["test"]["fraction_far_above_2x"]
        rr = ref.evaluate(X[b_rows], lab[b_rows], metric="l2", distances=DB)
        assert pc.opis == pytest.approx(rr.classes.opis, rel=1e-9, abs=1e-15)
        assert pc.uncalibrated_rows == int(sum(c not in theta for c in lab[b_rows]))


def test_results_never_depend_on_the_pilot(monkeypatch):
    """A pilot limit below the targets makes pass 1 run again over everything; a limit at
    the top of the key span is the plain two passes: the same bytes either way."""
    import opis_cli.engines.transfer as tr

    X, lab = float_data(7, n=400, C=30)
    want = calibrate(Data(X, lab), folds=4, timestamp=False).to_json()
    real = tr._pilot_limit
    for pick in (lambda lo, hi, got: lo + 1e-9 * (hi - lo), lambda lo, hi, got: hi):
        monkeypatch.setattr(tr, "_pilot_limit", lambda *a, pick=pick: pick(a[-2], a[-1],
                                                                           real(*a)))
        assert calibrate(Data(X, lab), folds=4, timestamp=False).to_json() == want
