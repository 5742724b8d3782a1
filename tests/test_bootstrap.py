"""Bootstrap over classes (opis_cli/bootstrap.py).

Expected replicate values come from a deliberately naive OPIS written here
(loops and the trapezoid rule), applied to draws regenerated from the
documented recipe (``np.random.default_rng(seed).integers(0, C, (B, C))`` on
the classes sorted by label), never from the code under test.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from np_compat import trapezoid
from opis_cli.metrics.bootstrap import (Bootstrap, bootstrap_curves, bootstrap_result,
                                difference_interval, labels_digest, percentile_interval)
from opis_cli.cli import main
from opis_cli.errors import ConfigError, InputError
from opis_cli.results import EvaluationResult

TH = np.linspace(0.2, 0.6, 21)


def synthetic_curves(C: int, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """C smooth utility curves in [0, 1]: logistic in the threshold, random centre and slope."""
    rng = np.random.default_rng(seed)
    centre = rng.uniform(0.25, 0.55, C)[:, None]
    slope = rng.uniform(10, 40, C)[:, None]
    height = rng.uniform(0.6, 1.0, C)[:, None]
    U = height / (1 + np.exp(-slope * (TH[None, :] - centre)))
    return U, [f"class_{i:04d}" for i in range(C)]


def naive_opis(U: np.ndarray, th: np.ndarray, labels: list[str], eps: float) -> tuple[float, float]:
    """SPEC 6, written out: range averages by the trapezoid rule over the grid."""
    width = th[-1] - th[0]
    avg = lambda v: float(trapezoid(v, th) / width)  # noqa: E731
    C = U.shape[0]
    ubar = [sum(U[c, k] for c in range(C)) / C for k in range(len(th))]
    opis = sum(avg((U[c] - np.array(ubar)) ** 2) for c in range(C)) / C
    mean_u = [avg(U[c]) for c in range(C)]
    order = sorted(range(C), key=lambda c: (mean_u[c], labels[c]))
    nw = max(1, math.ceil(eps * C - 1e-12))
    W, R = order[:nw], order[nw:]
    if not R:
        return opis, 0.0
    gap = U[R].mean(axis=0) - U[W].mean(axis=0)
    return opis, avg(gap ** 2)


def test_replicates_are_opis_of_the_documented_resamples():
    U, labels = synthetic_curves(12, seed=1)
    perm = np.random.default_rng(5).permutation(12)  # input order must not matter
    B, seed = 40, 11
    boot = bootstrap_curves(U[perm], TH, [labels[i] for i in perm], 0.1, resamples=B, seed=seed)
    order = sorted(range(12), key=lambda i: labels[i])
    Us, ls = U[order], [labels[i] for i in order]
    draws = np.random.default_rng(seed).integers(0, 12, size=(B, 12))
    for b in (0, 1, 17, 39):
        idx = draws[b]
        o, e = naive_opis(Us[idx], TH, [ls[i] for i in idx], 0.1)
        assert boot.replicates["opis"][b] == pytest.approx(o, rel=1e-10, abs=1e-15)
        assert boot.replicates["epsilon_opis"][b] == pytest.approx(e, rel=1e-10, abs=1e-15)
    o, e = naive_opis(U, TH, labels, 0.1)
    assert boot.estimate["opis"] == pytest.approx(o, rel=1e-10)
    assert boot.estimate["epsilon_opis"] == pytest.approx(e, rel=1e-10)
    assert boot.classes == 12 and boot.resamples == B and boot.seed == seed


def test_row_order_does_not_change_the_replicates():
    U, labels = synthetic_curves(15, seed=2)
    perm = np.random.default_rng(0).permutation(15)
    a = bootstrap_curves(U, TH, labels, 0.1, resamples=50, seed=3)
    b = bootstrap_curves(U[perm], TH, [labels[i] for i in perm], 0.1, resamples=50, seed=3)
    for m in ("opis", "epsilon_opis"):
        np.testing.assert_array_equal(a.replicates[m], b.replicates[m])


def _width(boot: Bootstrap, metric: str) -> float:
    lo, hi = boot.interval(metric)
    return hi - lo


def test_intervals_shrink_as_the_number_of_classes_grows():
    widths = {}
    for C in (10, 40, 160):
        U, labels = synthetic_curves(C, seed=4)
        boot = bootstrap_curves(U, TH, labels, 0.1, resamples=400, seed=0)
        widths[C] = (_width(boot, "opis"), _width(boot, "epsilon_opis"))
    for m in (0, 1):
        assert widths[160][m] < widths[40][m] < widths[10][m]
        # about 1/sqrt(C): 16x the classes should at least halve the width
        assert widths[160][m] < 0.5 * widths[10][m]


def test_fixed_seed_gives_byte_identical_output_and_another_seed_does_not():
    U, labels = synthetic_curves(20, seed=5)
    runs = [json.dumps(bootstrap_curves(U, TH, labels, 0.1, resamples=100, seed=s).to_dict())
            for s in (9, 9, 10)]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_interval_holds_the_stated_share_of_replicates():
    U, labels = synthetic_curves(25, seed=6)
    boot = bootstrap_curves(U, TH, labels, 0.1, resamples=1000, seed=1, confidence=0.9)
    for m in ("opis", "epsilon_opis"):
        lo, hi = boot.interval(m)
        inside = np.mean((boot.replicates[m] >= lo) & (boot.replicates[m] <= hi))
        assert 0.895 <= inside <= 0.91
        lo95, hi95 = boot.interval(m, 0.95)
        assert lo95 <= lo and hi95 >= hi


def test_percentile_interval_rejects_bad_levels():
    for c in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(ConfigError):
            percentile_interval(np.arange(10.0), c)


def test_too_few_resamples_is_an_error():
    U, labels = synthetic_curves(5)
    with pytest.raises(ConfigError):
        bootstrap_curves(U, TH, labels, 0.1, resamples=1)


def test_round_trip_through_json():
    U, labels = synthetic_curves(8, seed=7)
    boot = bootstrap_curves(U, TH, labels, 0.1, resamples=30, seed=2)
    back = Bootstrap.from_dict(json.loads(json.dumps(boot.to_dict())))
    for m in ("opis", "epsilon_opis"):
        np.testing.assert_array_equal(back.replicates[m], boot.replicates[m])
        assert back.interval(m) == boot.interval(m)
    assert back.pairs_with(boot)
    with pytest.raises(InputError):
        Bootstrap.from_dict({"resamples": 3})


def test_model_against_itself_gives_a_zero_paired_interval():
    U, labels = synthetic_curves(30, seed=8)
    a = bootstrap_curves(U, TH, labels, 0.1, resamples=200, seed=4)
    b = bootstrap_curves(U.copy(), TH, list(labels), 0.1, resamples=200, seed=4)
    for m in ("opis", "epsilon_opis"):
        iv = difference_interval(a, b, m)
        assert iv.method == "paired"
        assert (iv.lower, iv.upper, iv.estimate) == (0.0, 0.0, 0.0)


def test_paired_difference_is_the_quantile_of_per_replicate_differences():
    U, labels = synthetic_curves(30, seed=9)
    worse = np.clip(U - 0.2 * (np.arange(30) % 3 == 0)[:, None], 0, 1)
    a = bootstrap_curves(U, TH, labels, 0.1, resamples=300, seed=1)
    b = bootstrap_curves(worse, TH, labels, 0.1, resamples=300, seed=1)
    iv = difference_interval(a, b, "opis")
    d = b.replicates["opis"] - a.replicates["opis"]
    assert iv.method == "paired"
    assert iv.lower == pytest.approx(np.quantile(d, 0.025))
    assert iv.upper == pytest.approx(np.quantile(d, 0.975))
    assert iv.estimate == pytest.approx(b.estimate["opis"] - a.estimate["opis"])


def test_different_class_sets_fall_back_to_the_unpaired_interval():
    U, labels = synthetic_curves(30, seed=10)
    a = bootstrap_curves(U, TH, labels, 0.1, resamples=300, seed=1)
    b = bootstrap_curves(U[:-1], TH, labels[:-1], 0.1, resamples=300, seed=1)
    assert not a.pairs_with(b)
    iv = difference_interval(a, b, "opis")
    (alo, ahi), (blo, bhi) = a.interval("opis"), b.interval("opis")
    assert iv.method == "unpaired"
    assert iv.lower == pytest.approx(blo - ahi) and iv.upper == pytest.approx(bhi - alo)
    c = bootstrap_curves(U, TH, labels, 0.1, resamples=300, seed=2)  # another seed: unpaired
    assert difference_interval(a, c, "opis").method == "unpaired"


def test_labels_digest_depends_on_the_set_only():
    assert labels_digest(["b", "a"]) == labels_digest(["a", "b"])
    assert labels_digest(["a", "b"]) != labels_digest(["a", "c"])


# ------------------------------------------------------------------ on real results


@pytest.fixture(scope="module")
def small_npz(tmp_path_factory):
    """A small three-class data set (fast to evaluate)."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, 8))
    y = np.repeat(np.arange(6), 30)
    x = centres[y] + 0.8 * rng.normal(size=(len(y), 8))
    p = tmp_path_factory.mktemp("boot") / "small.npz"
    np.savez(p, embeddings=x.astype(np.float32), labels=np.array([f"c{v}" for v in y]))
    return p


def test_bootstrap_result_uses_the_result_curves(small_npz):
    from opis_cli import evaluate

    d = np.load(small_npz)
    res = evaluate(d["embeddings"], d["labels"], timestamp=False)
    boot = bootstrap_result(res, resamples=50, seed=0)
    assert boot.estimate["opis"] == pytest.approx(res.opis, rel=1e-12)
    assert boot.estimate["epsilon_opis"] == pytest.approx(res.epsilon_opis, rel=1e-12)
    loaded = EvaluationResult.from_json(res.to_json())
    with pytest.raises(InputError, match="no per-class curves"):
        bootstrap_result(loaded)


_TIME = re.compile(r'\n\s*"time": "[^"]*",?')


def test_evaluate_bootstrap_is_stored_and_reproducible(small_npz, tmp_path, capsys):
    outs = []
    for i, seed in enumerate((3, 3, 4)):
        p = tmp_path / f"r{i}.json"
        assert main(["evaluate", str(small_npz), "--bootstrap", "100", "--seed", str(seed),
                     "--json", str(p), "-q"]) == 0
        outs.append(p.read_text())
    assert _TIME.sub("", outs[0]) == _TIME.sub("", outs[1])
    assert _TIME.sub("", outs[0]) != _TIME.sub("", outs[2])
    doc = json.loads(outs[0])
    b = doc["bootstrap"]
    assert b["resamples"] == 100 and b["seed"] == 3 and b["classes"] == 6
    assert len(b["replicates"]["opis"]) == 100
    assert b["opis"]["estimate"] == pytest.approx(doc["opis"], rel=1e-12)
    assert b["opis"]["lower"] <= b["opis"]["upper"]
    # the result part of the document is the same as without --bootstrap
    p = tmp_path / "plain.json"
    assert main(["evaluate", str(small_npz), "--json", str(p), "-q"]) == 0
    plain = json.loads(p.read_text())
    doc.pop("bootstrap")
    for d in (doc, plain):
        d["provenance"].pop("time", None)
    assert doc == plain


def test_evaluate_prints_the_intervals(small_npz, capsys):
    capsys.readouterr()
    assert main(["evaluate", str(small_npz), "--bootstrap", "50"]) == 0
    out = capsys.readouterr().out
    assert "Bootstrap over classes" in out and "50 resamples of 6 classes" in out


def test_bad_bootstrap_count_is_a_usage_error(small_npz, capsys):
    capsys.readouterr()
    assert main(["evaluate", str(small_npz), "--bootstrap", "1", "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error:") and "--bootstrap" in err[0]
