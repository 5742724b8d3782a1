"""Machine-independent results (issue 16): every decision is that of float64 keys.

The engine computes inner products with float32 BLAS, whose rounding
depends on the CPU kernel. Wherever a float32 key lies within the proven
bound ``base.key_margins`` of a decision boundary, the pair is re-decided
with ``base.exact_keys`` (float64, one fixed order). These tests check:

* the pieces: the vectorised float64 sum equals its plain reference bit for
  bit, a pair and its mirror get one key, and the bound holds against
  numpy's float32 products on adversarial inputs (large norms, offsets);
* the whole: on continuous data with many thresholds (where float32 keys
  put pairs on the wrong side of a threshold), every count, order
  statistic, R@1 and MAP@R equals a naive float64 reference that uses the
  same float64 keys, with no "well-conditioned" seed selection;
* across CPUs: the same evaluation (with and without ``--verification``)
  and the same ``opis calibrate`` (class and group folds, fitted
  calibrations) under several ``OPENBLAS_CORETYPE`` kernels give the same
  JSON bytes (apart from the time), while the float32 products themselves
  differ between those kernels (so the test could fail).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numba as nb
import numpy as np
import pytest

import reference as ref
from data_gen import gaussian
from opis_cli import evaluate
from opis_cli.engines import _kernels
from opis_cli.engines.base import exact_keys, key_margins, pair_keys
from opis_cli.prepare import prepare
from ref_compare import compare

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_data" / "wordnet_hyponyms.parquet"
#: OpenBLAS kernels every x86-64 CPU can run (SkylakeX needs AVX-512)
CORETYPES = ("Haswell", "Sandybridge", "Prescott")


@nb.njit
def _sums(x, y, squares):
    return _kernels._sqdiff16(x, y) if squares else _kernels._dot16(x, y)


@pytest.mark.parametrize("dim", [1, 5, 15, 16, 17, 64, 100, 384])
def test_vectorised_sum_equals_its_plain_definition(dim):
    rng = np.random.default_rng(dim)
    x = (rng.normal(size=(40, dim)) * rng.uniform(1e-3, 1e3, size=(40, 1))).astype(np.float32)
    for squares in (False, True):
        for i in range(40):
            a, b = x[i], x[(i * 7 + 3) % 40]
            assert _sums(a, b, squares) == _kernels._sum16_ref(a, b, squares)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_a_pair_and_its_mirror_have_one_key(metric):
    x, y = gaussian(3, n=120, dim=37, n_classes=6)
    prep = prepare(x, y, metric=metric)
    rng = np.random.default_rng(0)
    q = rng.integers(0, len(prep.q_rows), 500)
    g = rng.integers(0, len(prep.g_rows), 500)
    # every row is a query and a gallery item, in the same order
    np.testing.assert_array_equal(exact_keys(prep, q, g), exact_keys(prep, g, q))


def _adversarial(seed, metric):
    rng = np.random.default_rng(seed)
    n, d = 300, int(rng.choice([7, 96, 385]))
    scale = rng.choice([1e-3, 1.0, 1e4])
    centre = rng.normal(size=d) * 50 * scale  # far from the origin: cancellation in l2
    x = (centre + rng.normal(size=(n, d)) * scale * rng.uniform(0.01, 1, size=(n, 1)))
    x[rng.integers(0, n, 20)] = x[rng.integers(0, n, 20)]  # duplicates
    y = rng.integers(0, 12, n)
    return prepare(x.astype(np.float32), y, metric=metric)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_the_margin_bounds_float32_keys(seed, metric):
    """|float32 BLAS key - float64 key| <= key_margins, with and without offsets."""
    prep = _adversarial(seed, metric)
    rng = np.random.default_rng(seed)
    preps = [prep, prep.with_offsets(rng.normal(size=prep.n_samples) * 0.1,
                                     rng.normal(size=prep.n_samples) * 0.1)]
    for p in preps:
        off = p.q_off is not None
        S = p.xq @ p.xg.T
        k32 = pair_keys(S, p.qn2, p.gn2, metric == "l2", p.q_off if off else None,
                        p.g_off if off else None)
        qi, gj = np.meshgrid(np.arange(len(p.q_rows)), np.arange(len(p.g_rows)), indexing="ij")
        k64 = exact_keys(p, qi.ravel(), gj.ravel()).reshape(k32.shape)
        m = key_margins(p)
        gap = np.abs(k32 - k64)
        assert (gap <= m[:, None]).all(), float((gap / m[:, None]).max())
        assert gap.max() > 0  # float32 keys do differ from float64 here


def _float64_distances(x, y, metric):
    """The N x N matrix of the engine's float64 keys as distances, in input row order."""
    prep = prepare(x, y, metric=metric)
    n = prep.n_samples
    qi, gj = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    k = exact_keys(prep, qi.ravel(), gj.ravel()).reshape(n, n)
    d = np.sqrt(np.maximum(k, 0)) if metric == "l2" else k
    out = np.empty((n, n))
    out[np.ix_(prep.q_rows, prep.g_rows)] = d
    return out


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_every_number_is_that_of_float64_keys(seed, metric):
    """Continuous data and 1001 thresholds: float32 keys would put pairs on the
    wrong side; the engine's counts, order statistics and rankings equal a
    naive reference run on the float64 keys, exactly, with no seed selection."""
    x, y = gaussian(100 + seed, n=int(260 + 20 * seed), dim=(24, 96, 200)[seed % 3],
                    n_classes=12)
    d = _float64_distances(x, y, metric)
    rng = np.random.default_rng(seed)
    opts = dict(num_thresholds=1001, metric=metric)
    if seed % 2:
        neg = np.sort(d[np.not_equal.outer(np.array(y), np.array(y))])
        opts["calibration_range"] = (float(np.quantile(neg, 0.05)), float(np.quantile(neg, 0.5)))
    else:
        opts["far_range"] = (float(rng.uniform(0.005, 0.05)), float(rng.uniform(0.2, 0.6)))
    if seed % 4 == 3:
        opts["groups"] = [f"g{int(v[1:]) % 3}" for v in y]
    res = evaluate(x, y, timestamp=False, **opts)
    r = ref.evaluate(x, y, distances=d, **opts)
    compare(res, r, rel=1e-12, dist_tol=0.0)
    assert res.calibration_range.lower == r.lower and res.calibration_range.upper == r.upper


def _json_without_time(text: str) -> str:
    d = json.loads(text)
    if "provenance" in d:  # (a calibration file has none)
        d["provenance"].pop("time", None)
    return json.dumps(d, sort_keys=True)


#: every CLI run of the tests below, by id: (command, its arguments after the sample);
#: OUT is a file of the run's own (the calibration that ``--out`` writes)
RUNS: dict[str, tuple[str, list[str]]] = {
    "far-range": ("evaluate", []),
    "explicit": ("evaluate", ["--calibration-range", "0.6:0.9"]),
    "l2-groups": ("evaluate", ["--metric", "l2", "--group-column", "group"]),
    "verification": ("evaluate", ["--verification"]),
    "verification-l2-groups": ("evaluate", ["--verification", "--metric", "l2", "--group-column",
                                            "group", "--calibration-range", "0.6:1.2"]),
    "sampled": ("evaluate", ["--engine", "sampled", "--negatives-per-query", "500",
                             "--retrieval-queries", "500"]),
    "sampled-l2-groups": ("evaluate", ["--engine", "sampled", "--negatives-per-query", "300",
                                       "--metric", "l2", "--group-column", "group"]),
    "class-folds": ("calibrate", []),
    "group-folds": ("calibrate", ["--group-column", "group"]),
    "cluster-16": ("calibrate", ["--method", "cluster:16", "--folds", "3"]),
    "fit-cluster-16": ("calibrate", ["--method", "cluster:16", "--out", "OUT"]),
    "fit-per-class-l2": ("calibrate", ["--method", "per-class", "--metric", "l2", "--out", "OUT"]),
}

#: one interpreter per kernel runs every case of RUNS in turn (``opis_cli.cli.main``, as
#: the ``opis`` command does) and prints {id: JSON}: 3 processes instead of 36
_RUN_ALL = """
import json, sys
from opis_cli.cli import main
folder, sample, runs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
out = {}
for name, (command, args) in runs.items():
    args = [f"{folder}/{name}.cal.json" if a == "OUT" else a for a in args]
    target = f"{folder}/{name}.json"
    rc = main([command, sample, "--json", target, "--quiet", *args])
    assert rc == 0, (name, rc)
    out[name] = open(target, encoding="utf-8").read()
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def under(tmp_path_factory) -> dict[str, dict[str, str]]:
    """coretype -> run id -> its JSON (without the time), every run of RUNS under
    ``OPENBLAS_CORETYPE=coretype`` (set before numpy loads: one process each)."""
    outs = {}
    for coretype in CORETYPES:
        folder = tmp_path_factory.mktemp(coretype)
        env = {**os.environ, "OPENBLAS_CORETYPE": coretype}
        proc = subprocess.run([sys.executable, "-c", _RUN_ALL, str(folder), str(SAMPLE),
                               json.dumps(RUNS)], env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        outs[coretype] = {k: _json_without_time(v) for k, v in json.loads(proc.stdout).items()}
    return outs


def _same_under_every_kernel(under, name: str) -> dict:
    """The JSON of run ``name``, asserted byte-identical (apart from the time) under
    every kernel of CORETYPES."""
    first = under[CORETYPES[0]][name]
    for c in CORETYPES:
        assert under[c][name] == first, f"OPENBLAS_CORETYPE={c} gives different JSON"
    return json.loads(first)


def _products_digest(coretype: str) -> str:
    """A digest of float32 BLAS products of the sample's rows under a kernel."""
    code = ("import hashlib, numpy as np, pyarrow.parquet as pq\n"
            f"t = pq.read_table({str(SAMPLE)!r}, columns=['embedding'])\n"
            "x = np.asarray(t.column('embedding').to_pylist()[:3000], np.float32)\n"
            "x /= np.linalg.norm(x, axis=1, keepdims=True)\n"
            "print(hashlib.sha256((x @ x.T).tobytes()).hexdigest())\n")
    env = {**os.environ, "OPENBLAS_CORETYPE": coretype}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_blas_kernels_round_differently_here():
    """The premise of the next test: these kernels' float32 products differ."""
    assert len({_products_digest(c) for c in CORETYPES}) > 1


@pytest.mark.parametrize("name", ["far-range", "explicit", "l2-groups"])
def test_the_same_json_under_every_blas_kernel(under, name):
    assert "opis" in _same_under_every_kernel(under, name)


@pytest.mark.parametrize("name", ["verification", "verification-l2-groups"])
def test_the_same_verification_under_every_blas_kernel(under, name):
    """SPEC 14's EER, minDCF, FNMR at FMR and DET points are those of the
    float64 keys (issue 23): the same bytes under every kernel."""
    assert "verification" in _same_under_every_kernel(under, name)


@pytest.mark.parametrize("name", ["sampled", "sampled-l2-groups"])
def test_the_same_sampled_estimate_under_every_blas_kernel(under, name):
    """``--engine sampled``: for the pairs it draws (given the seed), every
    decision is that of the float64 keys: the same bytes under every kernel."""
    assert "estimate" in _same_under_every_kernel(under, name)


@pytest.mark.parametrize("name", ["class-folds", "group-folds", "cluster-16", "fit-cluster-16",
                                  "fit-per-class-l2"])
def test_the_same_calibrate_json_under_every_blas_kernel(under, name):
    """``opis calibrate``: every fold's order statistics and counts, the
    calibrations fitted on each calibration side and compared on the unseen
    side, and the one fitted on all rows (``--out``, whose JSON is the
    calibration file), are decided by float64 keys: the same bytes under
    every kernel."""
    doc = _same_under_every_kernel(under, name)
    assert ("thresholds" if "--out" in RUNS[name][1] else "transfer") in doc


@nb.njit
def _cells(d, grid, inv):
    out = np.empty(d.shape[0], np.int64)
    for i in range(d.shape[0]):
        out[i] = _kernels._grid_cell(d[i], grid, inv)
    return out


@pytest.mark.parametrize("K", [2, 5, 101, 1001])
def test_grid_cell_is_searchsorted_left(K):
    rng = np.random.default_rng(K)
    grid = np.linspace(0.3, 0.7, K)
    d = np.concatenate([rng.uniform(0, 1, 5000), grid, np.nextafter(grid, 0),
                        np.nextafter(grid, 1), [np.inf, -np.inf, 0.3, 0.7]])
    got = _cells(d, grid, (K - 1) / (grid[-1] - grid[0]))
    np.testing.assert_array_equal(got, np.searchsorted(grid, d, side="left"))


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_a_third_pass_when_deferral_is_too_big_gives_the_same_result(metric, monkeypatch):
    from opis_cli.engines import exact

    x, y = gaussian(31, n=400, dim=48, n_classes=15)
    groups = [f"g{i % 4}" for i in range(len(y))]
    base = evaluate(x, y, metric=metric, groups=groups, timestamp=False)
    monkeypatch.setattr(exact, "DEFER_BYTES", 0)
    three = evaluate(x, y, metric=metric, groups=groups, timestamp=False)
    assert base.provenance["passes"] == 2 and three.provenance["passes"] == 3
    a, b = json.loads(base.to_json()), json.loads(three.to_json())
    for d in (a, b):
        d["provenance"].pop("passes")
    assert a == b


@pytest.mark.parametrize("seed", range(4))
def test_retrieval_among_near_ties_is_that_of_float64_keys(seed):
    """Every row within a few float32 roundings of every other: each heap top
    has many rivals within the margin (the side list fills, is pruned and
    grows); R@k and MAP@R still equal the float64 ranking exactly."""
    rng = np.random.default_rng(seed)
    n, dim = 240, 64
    anchor = rng.normal(size=dim)
    # distances of 1e-7 to 1e-4: all rivals within the margin, or within a few
    x = (anchor + rng.normal(size=(n, dim)) * (3e-4, 1e-3, 3e-3, 1e-2)[seed]).astype(np.float32)
    y = [f"c{i % 6}" for i in rng.permutation(n)]
    d = _float64_distances(x, y, "cosine")
    opts = dict(calibration_range=(float(np.quantile(d, 0.1)), float(np.quantile(d, 0.9))))
    res = evaluate(x, y, timestamp=False, **opts)
    r = ref.evaluate(x, y, distances=d, **opts)
    compare(res, r, rel=1e-12, dist_tol=0.0)
