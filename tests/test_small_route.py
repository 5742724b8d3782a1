"""The exact engine's small-input route (issue 26): the reference engine's
float64 numpy instead of the compiled kernels, for inputs of at most
``exact.SMALL_TERMS`` terms and ``exact.SMALL_PAIRS`` pairs.

conftest.py turns the route off for the session (``_OPIS_SMALL_TERMS=0``);
these tests turn it on by setting the bound, and check that

* a run on the route gives the kernels' bytes (JSON without provenance, and
  every array of the engine output) on seeded cases with ties, duplicate
  rows, singletons, query/gallery flags, groups, offsets, explicit and
  FAR-defined ranges, both metrics, retrieval left out, a diagnosis;
* the route is chosen by the input's size only, at the boundary of either
  bound, and never with the verification view (which the reference lacks);
* the provenance says which route ran (``provenance.index``);
* a run on the route imports no numba and no kernel module (a subprocess).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pytest

from data_gen import gaussian, integer_rows, sparse_signs
from opis_cli import evaluate
from opis_cli import options as opt
from opis_cli.api import build_result
from opis_cli.engines import exact
from opis_cli.engines.base import GridSpec
from opis_cli.engines.exact import ExactEngine, small_route
from opis_cli.engines.reference import ReferenceEngine
from opis_cli.metrics.threshold import Policy
from opis_cli.prepare import prepare

REPO = Path(__file__).resolve().parents[1]
KERNEL_INDEX = "exact (all pairs, BLAS inner products)"


def _case(kind: str, seed: int, metric: str, offsets: bool = False, n: int = 140,
          **spec) -> dict:
    """Seeded rows with a duplicate row, a singleton class, three groups and a
    query/gallery split; ``kind``: gaussian (D = 19: the
    sums' 16 lanes and a tail), integers (l2, exact distances, many ties) or
    signs (cosine, multiples of 1/4, many ties)."""
    rng = np.random.default_rng(seed)
    if kind == "gaussian":
        x, y = gaussian(seed, n=n, dim=19, n_classes=6, singletons=1)
    elif kind == "integers":
        x, y = integer_rows(seed, n=n, dim=3, n_classes=5)
    else:
        x, y = sparse_signs(seed, n=n, n_classes=5)
    y = np.array(y, dtype=object)
    x[3] = x[4]
    y[0] = "lonely"
    n = len(y)
    part = rng.integers(0, 5, n)
    groups = np.array(["g0", "g1", "g2"], object)[rng.integers(0, 3, n)]
    case = dict(x=x, y=y, groups=groups, is_query=part != 1, is_gallery=part != 0,
                metric=metric, spec=GridSpec(**{"num_thresholds": 21, **spec}))
    if offsets:  # multiples of 1/64: adjusted distances keep their ties
        case["offsets"] = (rng.integers(-4, 5, n) / 64, rng.integers(-4, 5, n) / 64)
    return case


CASES = {
    "cosine-far": _case("gaussian", 11, "cosine"),
    "l2-far-wide": _case("gaussian", 12, "l2", far_range=(0.05, 0.6)),
    "l2-explicit-ties": _case("integers", 13, "l2", calibration_range=(1.0, 3.0),
                              num_thresholds=9),
    "l2-far-ties": _case("integers", 14, "l2"),
    "cosine-explicit-ties": _case("signs", 15, "cosine", calibration_range=(0.25, 1.25),
                                  num_thresholds=5),
    "cosine-far-ties": _case("signs", 16, "cosine", far_range=(0.02, 0.2)),
    "cosine-far-offsets": _case("gaussian", 17, "cosine", offsets=True),
    "l2-explicit-offsets": _case("integers", 18, "l2", offsets=True,
                                 calibration_range=(0.5, 3.0), num_thresholds=11),
    "l2-far-no-retrieval": _case("integers", 19, "l2", retrieval=False),
    "cosine-far-min-rows": _case("gaussian", 20, "cosine", min_class_rows=25),
}


def _prep(case):
    prep = prepare(case["x"], list(case["y"]), metric=case["metric"], groups=list(case["groups"]),
                   is_query=case["is_query"], is_gallery=case["is_gallery"])
    if "offsets" in case:
        prep = prep.with_offsets(*case["offsets"])
    return prep


def _document(prep, out, case) -> str:
    res = build_result(prep, out, spec=case["spec"], metric=case["metric"],
                       utility=opt.UTILITY, beta=opt.BETA, epsilon=opt.EPSILON,
                       policy=Policy.parse(opt.THRESHOLD_POLICY), engine_name="exact",
                       group_column="group", timestamp=False)
    d = res.to_dict()
    return json.dumps(d.pop("provenance")), json.dumps(d, sort_keys=True)


def _run(case, terms: int, monkeypatch, block_bytes: int = exact.DEFAULT_BLOCK_BYTES):
    monkeypatch.setattr(exact, "SMALL_TERMS", terms)
    prep = _prep(case)
    return prep, ExactEngine(block_bytes=block_bytes).run(prep, case["spec"])


def _assert_same_output(a, b):
    """Every field of two engine outputs but passes and notes, arrays by
    value and dtype."""
    for f in fields(a):
        if f.name in ("passes", "notes"):
            continue
        va, vb = getattr(a, f.name), getattr(b, f.name)
        if isinstance(va, np.ndarray):
            assert va.dtype == vb.dtype and np.array_equal(va, vb), f.name
        else:
            assert va == vb, f.name


@pytest.mark.parametrize("name", sorted(CASES))
def test_small_route_gives_the_kernels_bytes(name, monkeypatch):
    case = CASES[name]
    prep, small = _run(case, 2**40, monkeypatch)
    _, kern = _run(case, 0, monkeypatch)
    assert small.notes["index"] == exact.SMALL_INDEX and "index" not in kern.notes
    _assert_same_output(small, kern)
    (p_small, d_small), (p_kern, d_kern) = (_document(prep, o, case) for o in (small, kern))
    assert d_small == d_kern
    assert json.loads(p_small)["index"] == exact.SMALL_INDEX
    assert json.loads(p_kern)["index"] == KERNEL_INDEX
    if not case["spec"].retrieval:  # left out on both routes: zeros, not ranks
        assert not small.first_rank.any() and not small.ap_at_r.any()


@pytest.mark.parametrize("name", ["cosine-far", "l2-far-ties", "l2-explicit-offsets"])
def test_small_route_bytes_do_not_depend_on_block_size(name, monkeypatch):
    case = CASES[name]
    prep, want = _run(case, 2**40, monkeypatch)
    _, got = _run(case, 2**40, monkeypatch, block_bytes=2**12)  # one query row a block
    _assert_same_output(got, want)
    assert got.notes == want.notes and got.passes == want.passes


@pytest.mark.parametrize("name", ["cosine-far", "l2-far-ties", "cosine-far-offsets"])
def test_reference_held_distances_are_the_streamed_ones(name):
    """The reference engine computes every distance once when nq * ng fits
    ``hold_pairs`` (the route's way), else once per pass: the same output,
    the same passes."""
    case = CASES[name]
    held = ReferenceEngine().run(_prep(case), case["spec"])
    streamed = ReferenceEngine(block_bytes=2**12, hold_pairs=0).run(_prep(case), case["spec"])
    _assert_same_output(held, streamed)
    assert held.passes == streamed.passes and held.notes == streamed.notes


def test_route_at_the_bounds(monkeypatch):
    """By the input's size only: nq * ng * D <= SMALL_TERMS and nq * ng <=
    SMALL_PAIRS, the verification view never (the reference lacks it)."""
    case = CASES["l2-far-ties"]
    prep = _prep(case)
    nq, ng, D = len(prep.q_rows), len(prep.g_rows), prep.dim
    spec = case["spec"]
    monkeypatch.setattr(exact, "SMALL_PAIRS", nq * ng)
    monkeypatch.setattr(exact, "SMALL_TERMS", nq * ng * D)
    assert small_route(prep, spec)
    assert not small_route(prep, replace(spec, verification=opt.DCF))
    monkeypatch.setattr(exact, "SMALL_TERMS", nq * ng * D - 1)
    assert not small_route(prep, spec)
    monkeypatch.setattr(exact, "SMALL_TERMS", nq * ng * D)
    monkeypatch.setattr(exact, "SMALL_PAIRS", nq * ng - 1)
    assert not small_route(prep, spec)
    monkeypatch.setattr(exact, "SMALL_TERMS", 0)  # the test session's setting
    assert not small_route(prep, spec)


def test_the_session_runs_the_kernels():
    """conftest.py's ``_OPIS_SMALL_TERMS=0`` reached the engine: every other
    test of the exact engine runs the compiled kernels."""
    assert os.environ["_OPIS_SMALL_TERMS"] == "0" and exact.SMALL_TERMS == 0
    case = CASES["cosine-far"]
    out = ExactEngine().run(_prep(case), case["spec"])
    assert "index" not in out.notes


def _api_case(name):
    case = CASES[name]
    return dict(embeddings=case["x"], labels=list(case["y"]), metric=case["metric"],
                groups=list(case["groups"]), is_query=case["is_query"],
                is_gallery=case["is_gallery"], timestamp=False)


@pytest.mark.parametrize("extra", [
    dict(far_range=(0.05, 0.5)),
    dict(calibration_range=(0.5, 3.0), num_thresholds=11),
    dict(diagnose=True),
    dict(verification=True),  # falls back to the kernels: the provenance says so
])
def test_evaluate_on_both_routes(extra, monkeypatch):
    kw = {**_api_case("l2-far-ties"), **extra}
    monkeypatch.setattr(exact, "SMALL_TERMS", 2**40)
    a = evaluate(**kw).to_dict()
    monkeypatch.setattr(exact, "SMALL_TERMS", 0)
    b = evaluate(**kw).to_dict()
    pa, pb = a.pop("provenance"), b.pop("provenance")
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert pb["index"] == KERNEL_INDEX
    assert pa["index"] == (KERNEL_INDEX if extra.get("verification") else exact.SMALL_INDEX)


_PROBE = """
import sys
import numpy as np
import opis_cli
from opis_cli.engines import exact
rng = np.random.default_rng(0)
x = rng.normal(size=(120, 6)).astype(np.float32)
y = rng.integers(0, 4, 120)
r = opis_cli.evaluate(x, y, timestamp=False)
loaded = sorted(m for m in sys.modules if m == "numba" or m.startswith(("numba.", "llvmlite"))
                or m.startswith("opis_cli.engines._") and m.endswith(("kernels", "_jit")))
print(exact.SMALL_TERMS, r.provenance["index"], loaded)
import opis_cli.engines._kernels  # the probe sees numba where it is loaded
print("numba" in sys.modules)
"""


def test_small_route_imports_no_numba():
    env = {k: v for k, v in os.environ.items() if k != "_OPIS_SMALL_TERMS"}  # the default
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-c", _PROBE], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.splitlines()
    assert first == f"{2**27} {exact.SMALL_INDEX} []"
    assert second == "True"


def test_cli_sample_on_the_route_imports_no_numba_and_matches_the_reference(tmp_path):
    """Quickstart 1 as a user runs it (the default bound): no numba import in
    the whole command (``-X importtime`` lists every module loaded), and its
    JSON differs from ``--engine reference``'s only in provenance."""
    env = {k: v for k, v in os.environ.items() if k != "_OPIS_SMALL_TERMS"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    docs = {}
    for engine in ("exact", "reference"):
        out = tmp_path / f"{engine}.json"
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "opis_cli.cli", "evaluate",
             str(REPO / "sample_data" / "digits_weak.parquet"), "--engine", engine,
             "--json", str(out), "-q"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        if engine == "exact":
            loaded = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()
                      if line.startswith("import time:")}
            assert "opis_cli.engines.reference" in loaded  # the probe sees the imports
            assert not {m for m in loaded if m == "numba" or m.startswith("numba.")
                        or m.startswith("opis_cli.engines._")}
        docs[engine] = json.loads(out.read_text())
    prov = {e: d.pop("provenance") for e, d in docs.items()}
    assert json.dumps(docs["exact"], sort_keys=True) == json.dumps(docs["reference"],
                                                                   sort_keys=True)
    assert prov["exact"]["index"] == exact.SMALL_INDEX
    assert prov["exact"]["engine"] == "exact" and prov["reference"]["engine"] == "reference"


def test_evaluate_either_side_of_the_bound(monkeypatch):
    """The same input with the bound at its size (the route) and one term below
    (the kernels): the same JSON but for provenance.index."""
    kw = _api_case("cosine-far-ties")
    n_q, n_g = int(np.sum(kw["is_query"])), int(np.sum(kw["is_gallery"]))
    terms = n_q * n_g * kw["embeddings"].shape[1]
    docs = {}
    for bound in (terms, terms - 1):
        monkeypatch.setattr(exact, "SMALL_TERMS", bound)
        docs[bound] = evaluate(**kw).to_dict()
    prov = {b: d.pop("provenance") for b, d in docs.items()}
    assert prov[terms]["index"] == exact.SMALL_INDEX
    assert prov[terms - 1]["index"] == KERNEL_INDEX
    assert json.dumps(docs[terms], sort_keys=True) == json.dumps(docs[terms - 1], sort_keys=True)
