"""Every registered engine against the reference engine, driven by capabilities.

The reference engine (``opis_cli/engines/reference.py``, plain float64 numpy)
is itself checked against the naive SPEC reading of ``reference.py`` and a
hand-worked case; then, over every entry of ``engines.registry.ENGINES``:

* ``exact`` engines give the reference's JSON bytes (provenance removed) on
  small seeded cases with ties, duplicate rows, singleton classes, groups,
  query/gallery flags, both metrics, FAR-defined and explicit ranges, and
  calibration offsets where the engine has ``offsets``;
* the knn engine with K covering the whole gallery gives them too;
* block size and thread count never change an engine's bytes;
* ``estimates`` engines give intervals that hold the reference's values on a
  case where they should, and the same bytes for the same seed.

The retrieval R-Precision counts (``EngineOutput.hits_at_r``) are compared
where both engines report them; where an engine does not yet, the reference's
are left out of its document.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import replace

import numpy as np
import pytest

import reference as ref
from data_gen import gaussian, integer_rows, sparse_signs
from opis_cli import options as opt
from opis_cli.api import build_result
from opis_cli.engines import registry
from opis_cli.engines.base import DEFAULT_BLOCK_BYTES, GridSpec
from opis_cli.engines.reference import ReferenceEngine, _sum16
from opis_cli.metrics.threshold import Policy
from opis_cli.prepare import prepare
from ref_compare import compare



def _names(*caps: str) -> list:
    """Registered engines with every capability of ``caps``; those reading shards
    (dask) run on a local cluster: marked slow."""
    return [pytest.param(e.name, marks=pytest.mark.slow) if e.capabilities.shards else e.name
            for e in registry.ENGINES if all(getattr(e.capabilities, c) for c in caps)]


def _case(kind: str, seed: int, metric: str, offsets: bool = False, **spec) -> dict:
    """Seeded data with a duplicate row, a singleton class, three groups and a
    query/gallery split; ``kind``: gaussian (continuous, D = 19: the float64
    sums' 16 lanes and a tail), integers (l2: exact distances, many ties) or
    signs (cosine: multiples of 1/4, many ties)."""
    rng = np.random.default_rng(seed)
    if kind == "gaussian":
        x, y = gaussian(seed, n=150, dim=19, n_classes=7, singletons=1)
    elif kind == "integers":
        x, y = integer_rows(seed, n=140, dim=3, n_classes=5)
    else:
        x, y = sparse_signs(seed, n=140, n_classes=5)
    y = np.array(y, dtype=object)
    x[3] = x[4]
    y[0] = "lonely"
    n = len(y)
    part = rng.integers(0, 5, n)
    case = dict(x=x, y=y, groups=np.array(["g0", "g1", "g2"], object)[rng.integers(0, 3, n)],
                is_query=part != 1, is_gallery=part != 0, metric=metric,
                spec=GridSpec(**{"num_thresholds": 21, **spec}))
    if offsets:  # multiples of 1/64: adjusted distances keep their ties
        case["offsets"] = (rng.integers(-4, 5, n) / 64, rng.integers(-4, 5, n) / 64)
    return case


CASES = {
    "cosine-far": _case("gaussian", 1, "cosine"),
    "l2-far": _case("gaussian", 2, "l2", far_range=(0.05, 0.3)),
    "l2-explicit-ties": _case("integers", 3, "l2", calibration_range=(1.0, 3.0), num_thresholds=9),
    "l2-far-ties": _case("integers", 4, "l2"),
    "cosine-explicit-ties": _case("signs", 5, "cosine", calibration_range=(0.25, 1.25),
                                  num_thresholds=5),
    "cosine-far-ties": _case("signs", 6, "cosine", far_range=(0.02, 0.2)),
    "cosine-far-offsets": _case("gaussian", 7, "cosine", offsets=True),
    "l2-explicit-offsets": _case("integers", 8, "l2", offsets=True,
                                 calibration_range=(0.5, 3.0), num_thresholds=11),
}


def _engine(name: str, request, block_bytes: int = DEFAULT_BLOCK_BYTES, **options):
    e = registry.entry(name)
    if e.capabilities.shards:  # the distributed engine, on the local test cluster
        import importlib

        pytest.importorskip("distributed", reason="the dask extra: pip install '.[dask]'")

        cls = getattr(importlib.import_module(e.module), e.cls)
        return cls(block_bytes=block_bytes, client=request.getfixturevalue("client"))
    return e.build(block_bytes=block_bytes, **options)


def _output(engine, case):
    prep = prepare(case["x"], list(case["y"]), metric=case["metric"], groups=list(case["groups"]),
                   is_query=case["is_query"], is_gallery=case["is_gallery"])
    if "offsets" in case:
        prep = prep.with_offsets(*case["offsets"])
    return prep, engine.run(prep, case["spec"])


def _document(prep, out, case) -> str:
    res = build_result(prep, out, spec=case["spec"], metric=case["metric"],
                       utility=opt.UTILITY, beta=opt.BETA, epsilon=opt.EPSILON,
                       policy=Policy.parse(opt.THRESHOLD_POLICY), engine_name="any",
                       group_column="group", timestamp=False)
    d = res.to_dict()
    d.pop("provenance")
    return json.dumps(d, sort_keys=True)


def _same_as_reference(engine, case, request, arrays: bool = True) -> None:
    """The engine's document is the reference's, byte for byte; with ``arrays``
    its per-query retrieval arrays and counts are too."""
    prep, out = _output(engine, case)
    _, want = _output(ReferenceEngine(), case)
    if arrays:
        for f in ("first_rank", "ap_at_r", "n_relevant", "class_tp", "class_fp", "group_tp",
                  "group_fp", "thresholds", "hist_pos", "hist_neg", "hist_edges"):
            np.testing.assert_array_equal(getattr(out, f), getattr(want, f), err_msg=f)
    if out.hits_at_r is None:
        want = replace(want, hits_at_r=None)
    else:
        np.testing.assert_array_equal(out.hits_at_r, want.hits_at_r)
    assert _document(prep, out, case) == _document(prep, want, case)


@contextmanager
def _one_thread():
    """numba and BLAS limited to one thread."""
    import numba
    from threadpoolctl import threadpool_limits

    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        numba.set_num_threads(before)


# ---------------------------------------------------------------------------
# the reference engine itself
# ---------------------------------------------------------------------------
def test_sum16_is_the_documented_order():
    t = np.random.default_rng(0).standard_normal((3, 37))
    lanes = [sum((t[:, k] for k in range(j, 32, 16)), np.zeros(3)) for j in range(16)]
    while len(lanes) > 1:
        lanes = [lanes[i] + lanes[i + 1] for i in range(0, len(lanes), 2)]
    want = lanes[0]
    for k in range(32, 37):
        want = want + t[:, k]
    assert np.array_equal(_sum16(t), want)
    np.testing.assert_allclose(_sum16(t), t.sum(axis=1), rtol=1e-13)


def test_reference_engine_hand_case():
    """Four rows on a line, l2: a a b b at 0, 1, 3, 3 (a duplicate at distance 0)."""
    x = np.array([[0.0], [1.0], [3.0], [3.0]], np.float32)
    prep = prepare(x, ["a", "a", "b", "b"], metric="l2")
    out = ReferenceEngine().run(prep, GridSpec(num_thresholds=3, calibration_range=(1.0, 3.0)))
    # class a: positives (0,1),(1,0) at 1; negatives 0-2,0-3 at 3, 1-2,1-3 at 2
    # class b: positives (2,3),(3,2) at 0; negatives 2-0,3-0 at 3, 2-1,3-1 at 2
    assert out.class_tp.tolist() == [[2, 2, 2], [2, 2, 2]]
    assert out.class_fp.tolist() == [[0, 2, 4], [0, 2, 4]]
    assert out.first_rank.tolist() == [1, 1, 1, 1]
    assert out.n_relevant.tolist() == [1, 1, 1, 1]
    assert out.hits_at_r.tolist() == [1, 1, 1, 1]
    assert out.ap_at_r.tolist() == [1.0, 1.0, 1.0, 1.0]
    # t(F) with far-range 0.25:1 over the 8 negatives: ranks 2 and 8 -> 2 and 3
    far = ReferenceEngine().run(prep, GridSpec(num_thresholds=3, far_range=(0.25, 1.0)))
    assert far.thresholds.tolist() == [2.0, 2.5, 3.0] and far.range_source == "far"


def test_reference_engine_ranks_ties_by_row():
    """Query 0's neighbours all at distance 1: ranked by row, the positive (row 3)
    is third; AP@R with R = 1 is then 0 and none of the R nearest is positive."""
    x = np.array([[0, 0], [1, 0], [0, 1], [-1, 0], [5, 5], [5, 6]], np.float32)
    prep = prepare(x, ["a", "b", "c", "a", "b", "c"], metric="l2")
    out = ReferenceEngine().run(prep, GridSpec(num_thresholds=2, calibration_range=(0.5, 2)))
    q0 = int(np.nonzero(prep.q_rows == 0)[0][0])
    assert (out.first_rank[q0], out.ap_at_r[q0], out.hits_at_r[q0]) == (3, 0.0, 0)


@pytest.mark.parametrize("case", ["cosine-far", "l2-far-ties", "cosine-far-ties"])
def test_reference_order_statistic_by_bisection_is_the_sorted_one(case, monkeypatch):
    """With room for only a few values the reference narrows the range by
    bisection before sorting: the same thresholds, and the same output."""
    from opis_cli.engines import reference

    _, want = _output(ReferenceEngine(), CASES[case])
    monkeypatch.setattr(reference, "_HELD", 5)
    _, got = _output(ReferenceEngine(block_bytes=2**12), CASES[case])
    assert got.passes > want.passes  # it did bisect
    np.testing.assert_array_equal(got.thresholds, want.thresholds)
    np.testing.assert_array_equal(got.class_fp, want.class_fp)


@pytest.mark.parametrize("seed", range(4))
def test_reference_engine_agrees_with_the_naive_spec_reading(seed):
    """Exact data (integer l2 rows, +-1 cosine rows): every count and number of
    the result equals ``reference.py``'s, which shares no code with it."""
    from opis_cli import evaluate

    x, y = integer_rows(seed) if seed % 2 else sparse_signs(seed)
    metric = "l2" if seed % 2 else "cosine"
    rng = np.random.default_rng(seed)
    groups = list(np.array(["u", "v"], object)[rng.integers(0, 2, len(y))])
    opts = dict(metric=metric, groups=groups, calibration_range=(0.5, 2.5) if seed < 2 else None)
    res = evaluate(x, y, engine=ReferenceEngine(), timestamp=False, **opts)
    compare(res, ref.evaluate(x, y, **opts))


# ---------------------------------------------------------------------------
# every engine
# ---------------------------------------------------------------------------
def test_registry_names_are_the_cli_choices():
    assert registry.NAMES == opt.ENGINES
    for e in registry.ENGINES:
        assert e.help and e.name in registry.engine_help()
        assert all(o.help and o.flag.startswith("--") for o in e.options)


@pytest.mark.parametrize("case", [c for c in CASES if "offsets" not in CASES[c]])
@pytest.mark.parametrize("name", _names("exact"))
def test_exact_engines_give_the_reference_bytes(name, case, request):
    _same_as_reference(_engine(name, request, block_bytes=2**14), CASES[case], request)


@pytest.mark.parametrize("case", [c for c in CASES if "offsets" in CASES[c]])
@pytest.mark.parametrize("name", _names("exact", "offsets"))
def test_exact_engines_with_offsets_give_the_reference_bytes(name, case, request):
    _same_as_reference(_engine(name, request, block_bytes=2**14), CASES[case], request)


@pytest.mark.parametrize("case", [c for c in CASES if "offsets" not in CASES[c]])
def test_knn_covering_the_gallery_gives_the_reference_bytes(case, request):
    _same_as_reference(_engine("knn", request, k=10**6), CASES[case], request, arrays=False)


@pytest.mark.parametrize("name", _names())
def test_block_size_and_threads_never_change_bytes(name, request):
    case = CASES["cosine-far-offsets" if registry.entry(name).capabilities.offsets
                 else "l2-far"]
    options = {"k": 10**6}
    docs = []
    for block in (DEFAULT_BLOCK_BYTES, 2**12):
        docs.append(_document(*_output(_engine(name, request, block, **options), case), case))
    with _one_thread():
        docs.append(_document(*_output(_engine(name, request, 2**13, **options), case), case))
    assert docs[0] == docs[1] == docs[2]


#: SPEC 15's interval names -> where the reference's value lives in its JSON
_INTERVALS = {"opis": ("opis",), "epsilon_opis": ("epsilon_opis",),
              "calibration_range.lower": ("calibration_range", "lower"),
              "calibration_range.upper": ("calibration_range", "upper"),
              "recommended_threshold.value": ("recommended_threshold", "value"),
              "recall_at_k.1": ("retrieval", "recall_at_k", "1"),
              "map_at_r": ("retrieval", "map_at_r"),
              "r_precision": ("retrieval", "r_precision")}


@pytest.mark.parametrize("name", _names("estimates"))
def test_estimating_engines_cover_the_reference_and_repeat_bytes(name, request):
    """Over 20 seeds each 95% interval holds the reference's value at least 14
    times (measured: 16-19; a miss rate this high would be a bug), and a
    seed gives the same bytes twice."""
    from opis_cli import evaluate

    x, y = gaussian(11, n=600, dim=12, n_classes=12)
    want = evaluate(x, y, engine=ReferenceEngine(), timestamp=False).to_dict()

    def run(seed):
        eng = _engine(name, request, seed=seed, negatives_per_query=100, retrieval_queries=200)
        return evaluate(x, y, engine=eng, timestamp=False)

    assert run(3).to_json() == run(3).to_json()
    held = dict.fromkeys(_INTERVALS, 0)
    for seed in range(20):
        intervals = run(seed).to_dict()["estimate"]["intervals"]
        assert set(intervals) == set(_INTERVALS)
        for key, path in _INTERVALS.items():
            v = want
            for p in path:
                v = v[p]
            lo, hi = intervals[key]
            held[key] += lo <= v <= hi
    assert min(held.values()) >= 14, held


# ---------------------------------------------------------------------------
# the command line asks the registry
# ---------------------------------------------------------------------------
def _cli(capsys, *args):
    from opis_cli.cli import main

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


def test_cli_engine_choice_and_the_offsets_capability(capsys, files):
    d = files
    data = [d / "x.npy", "--labels", d / "y.txt", "--metric", "l2"]
    code, _, err = _cli(capsys, "evaluate", *data, "--engine", "nope", "--json", d / "r.json")
    assert code == 2 and err == ("Error: --engine 'nope': expected one of exact, knn, dask, "
                                 "sampled, reference\n")
    assert _cli(capsys, "calibrate", *data, "--method", "per-class", "--out", d / "cal.json",
                "-q")[0] == 0
    code, _, err = _cli(capsys, "evaluate", *data, "--engine", "sampled", "--calibration",
                        d / "cal.json", "--json", d / "r.json")
    assert code == 2 and err.count("\n") == 1, err
    assert "--calibration needs --engine exact, dask or reference, not sampled" in err
    assert not (d / "r.json").exists()
    docs = []
    for engine in ("exact", "reference"):  # offsets through the CLI: the same bytes
        code, out, err = _cli(capsys, "evaluate", *data, "--engine", engine, "--calibration",
                              d / "cal.json", "--json", "-", "-q")
        assert code == 0, err
        doc = json.loads(out)
        assert doc["provenance"]["engine"] == engine
        doc.pop("provenance")
        docs.append(json.dumps(doc, sort_keys=True))
    assert docs[0] == docs[1]
