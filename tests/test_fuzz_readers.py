"""Fuzzing the readers and the options of ``opis evaluate`` (Hypothesis).

Every generated run must end one of two ways:

* exit 0, and the result JSON equals the in-process result on the same
  arrays, which itself equals the naive reference (``reference.py``, via
  ``ref_compare.compare``): the reader changed nothing on the way;
* exit 2, exactly one ``Error: ...`` line on stderr, nothing on stdout, and
  no output file.

Inputs: Parquet (list and fixed-size-list columns, query/gallery flags),
``.npy`` with a labels file (``.txt``, ``.csv``, ``.npy``, Parquet), ``.npz``,
well-formed and malformed (random bytes, truncated files, wrong shapes and
dtypes, NaN, missing columns, mismatched lengths); option values valid and
invalid. Data are small integer coordinates with the l2 metric: every
distance is exact in float32 and float64, so the comparison is exact (1e-9).

The example budget is the Hypothesis profile of tests/conftest.py ("ci" by
default; ``HYPOTHESIS_PROFILE=long`` for a longer local run).
"""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import reference as ref
from hypothesis import given
from hypothesis import strategies as st
from ref_compare import compare

from opis_cli import evaluate
from opis_cli.cli import main
from opis_cli.errors import OpisError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

LABEL_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1,
                     max_size=5)
#: labels a .txt file can hold (one per line: no newline, no trailing CR)
TXT_LABEL = st.text(st.characters(codec="utf-8", exclude_characters="\x00\n\r"), min_size=1,
                    max_size=5)


@st.composite
def datasets(draw, label_text=LABEL_TEXT, flags=True):
    """(x, labels, is_query, is_gallery): small integer rows, labels drawn from a few names."""
    n = draw(st.integers(4, 18))
    dim = draw(st.integers(1, 3))
    names = draw(st.lists(label_text, min_size=2, max_size=4, unique=True))
    labels = [names[i % len(names)] if i < len(names) else draw(st.sampled_from(names))
              for i in range(n)]
    x = np.array(draw(st.lists(st.lists(st.integers(-2, 2), min_size=dim, max_size=dim),
                               min_size=n, max_size=n)), dtype=np.float32)
    isq = isg = None
    if flags and draw(st.booleans()):
        isq = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
        isg = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
        isq[0] = isg[0] = True
    return x, labels, isq, isg


def expected(x, labels, isq, isg, **opts):
    """The in-process result and the reference, or None when the input cannot be evaluated."""
    try:
        r = ref.evaluate(x, labels, is_query=isq, is_gallery=isg, **opts)
    except (ValueError, ZeroDivisionError, IndexError):
        return None
    if r.classes.evaluated < 2:
        return None
    res = evaluate(x, labels, is_query=isq, is_gallery=isg, timestamp=False, **opts)
    compare(res, r, rel=1e-9)
    return res


def without_provenance(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k != "provenance"}


def run(capsys, args, out: Path):
    capsys.readouterr()
    code = main(["evaluate", *map(str, args), "--json", str(out), "-q"])
    stdout, stderr = capsys.readouterr()
    return code, stdout, stderr


def assert_usage_error(code, stdout, stderr, out: Path):
    assert code == 2, (code, stderr)
    assert stdout == ""
    assert stderr.startswith("Error: ") and stderr.count("\n") == 1, stderr
    assert "Traceback" not in stderr
    assert not out.exists(), "an output file was left after an error"


def check(capsys, args, out: Path, want) -> None:
    """Exit 0 with the expected result (``want``), or (``want`` None) exit 2 cleanly."""
    code, stdout, stderr = run(capsys, args, out)
    if want is None:
        assert_usage_error(code, stdout, stderr, out)
        return
    assert code == 0, stderr
    got = json.loads(out.read_text(encoding="utf-8"))
    assert without_provenance(got) == without_provenance(json.loads(want.to_json()))


def parquet_file(path: Path, x, labels, isq, isg, fixed: bool) -> Path:
    dim = x.shape[1]
    typ = pa.list_(pa.float32(), dim) if fixed else pa.list_(pa.float32())
    cols = {"embedding": pa.array([list(map(float, r)) for r in x], type=typ),
            "label": pa.array(labels)}
    if isq is not None:
        cols["is_query"] = pa.array(isq)
        cols["is_gallery"] = pa.array(isg)
    pq.write_table(pa.table(cols), str(path))
    return path


# ------------------------------------------------------------- well-formed inputs
@given(data=datasets(), fixed=st.booleans())
def test_parquet_reader_gives_the_reference_result(capsys, data, fixed):
    x, labels, isq, isg = data
    with tempfile.TemporaryDirectory() as d:
        src = parquet_file(Path(d) / "e.parquet", x, labels, isq, isg, fixed)
        check(capsys, [src, "--metric", "l2"], Path(d) / "r.json",
              expected(x, labels, isq, isg, metric="l2"))


@given(data=datasets(label_text=TXT_LABEL, flags=False),
       kind=st.sampled_from(["txt", "csv", "npy", "parquet"]))
def test_npy_with_a_labels_file_gives_the_reference_result(capsys, data, kind):
    x, labels, _, _ = data
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        np.save(d / "e.npy", x)
        lab = d / f"labels.{kind}"
        if kind == "txt":
            lab.write_text("".join(f"{v}\n" for v in labels), encoding="utf-8")
        elif kind == "csv":
            pacsv.write_csv(pa.table({"label": pa.array(labels)}), str(lab))
        elif kind == "npy":
            np.save(lab, np.array(labels))
        else:
            pq.write_table(pa.table({"label": pa.array(labels)}), str(lab))
        check(capsys, [d / "e.npy", "--labels", lab, "--metric", "l2"], d / "r.json",
              expected(x, labels, None, None, metric="l2"))


@given(data=datasets(label_text=st.text("ab01_ -", min_size=1, max_size=3)),
       int_labels=st.booleans())
def test_npz_gives_the_reference_result(capsys, data, int_labels):
    x, labels, isq, isg = data
    if int_labels:  # integer label arrays are compared as their text
        codes = {v: i for i, v in enumerate(dict.fromkeys(labels))}
        arr = np.array([codes[v] for v in labels])
        labels = [str(v) for v in arr]
    else:
        arr = np.array(labels)
    arrays = {"embeddings": x, "labels": arr}
    if isq is not None:
        arrays.update(is_query=isq, is_gallery=isg)
    with tempfile.TemporaryDirectory() as d:
        np.savez(Path(d) / "e.npz", **arrays)
        check(capsys, [Path(d) / "e.npz", "--metric", "l2"], Path(d) / "r.json",
              expected(x, labels, isq, isg, metric="l2"))


# ------------------------------------------------------------------ malformed inputs
def _npy_bytes(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


BAD_ARRAYS = st.sampled_from([
    np.zeros(5, np.float32),  # 1-D
    np.zeros((2, 3, 2), np.float32),  # 3-D
    np.zeros((0, 3), np.float32),  # no rows
    np.zeros((4, 0), np.float32),  # no dimensions
    np.array([["a", "b"], ["c", "d"]]),  # text
    np.array([[1 + 2j, 3j]] * 4),  # complex
    np.array([[1.0, np.nan]] * 4, np.float32),  # NaN
    np.array([[1.0, np.inf]] * 4),  # infinity
    np.array([[{"a": 1}]] * 4, dtype=object),  # pickled objects
])


@given(arr=BAD_ARRAYS, n_labels=st.integers(0, 6))
def test_malformed_npy_is_one_error_line(capsys, arr, n_labels):
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        (d / "e.npy").write_bytes(_npy_bytes(arr))
        (d / "l.txt").write_text("".join(f"c{i % 2}\n" for i in range(n_labels)))
        out = d / "r.json"
        assert_usage_error(*run(capsys, [d / "e.npy", "--labels", d / "l.txt"], out), out)


@given(data=datasets(), suffix=st.sampled_from([".parquet", ".npz", ".npy"]),
       cut=st.floats(0.0, 0.95), noise=st.binary(max_size=64))
def test_truncated_or_random_files_are_one_error_line(capsys, data, suffix, cut, noise):
    """A valid file cut short (or replaced by random bytes) never crashes or half-writes."""
    x, labels, isq, isg = data
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        src = d / f"e{suffix}"
        if suffix == ".parquet":
            parquet_file(src, x, labels, isq, isg, False)
        elif suffix == ".npz":
            np.savez(src, embeddings=x, labels=np.array(labels))
        else:
            np.save(src, x)
        raw = src.read_bytes()
        src.write_bytes(raw[: int(cut * len(raw))] + noise)
        (d / "l.txt").write_text("".join(f"c{i % 2}\n" for i in range(len(x))))
        args = [src] + (["--labels", d / "l.txt"] if suffix == ".npy" else [])
        out = d / "r.json"
        code, stdout, stderr = run(capsys, args, out)
        if code == 0:  # the cut kept a readable file (e.g. .npy header + all rows): fine
            assert out.exists()
        else:
            assert_usage_error(code, stdout, stderr, out)


@given(data=datasets(), defect=st.sampled_from(
    ["no label column", "no embedding column", "null label", "ragged", "int query",
     "label count", "wrong column type", "empty table"]))
def test_malformed_parquet_is_one_error_line(capsys, data, defect):
    x, labels, _, _ = data
    n = len(x)
    emb = pa.array([list(map(float, r)) for r in x], type=pa.list_(pa.float32()))
    lab = pa.array(labels)
    cols = {"embedding": emb, "label": lab}
    args = []
    if defect == "no label column":
        del cols["label"]
    elif defect == "no embedding column":
        del cols["embedding"]
    elif defect == "null label":
        cols["label"] = pa.array(labels[:-1] + [None])
    elif defect == "ragged":
        rows = [list(map(float, r)) for r in x]
        rows[-1] = rows[-1] + [1.0]
        cols["embedding"] = pa.array(rows, type=pa.list_(pa.float32()))
    elif defect == "int query":
        cols["is_query"] = pa.array([2] * n)
    elif defect == "label count":
        args = ["--labels", "LABELS"]
    elif defect == "wrong column type":
        cols["embedding"] = pa.array([str(r) for r in x])
    elif defect == "empty table":
        cols = {"embedding": pa.array([], type=pa.list_(pa.float32())),
                "label": pa.array([], type=pa.string())}
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        pq.write_table(pa.table(cols), str(d / "e.parquet"))
        (d / "l.txt").write_text("a\nb\n")
        args = [str(d / "l.txt") if a == "LABELS" else a for a in args]
        out = d / "r.json"
        assert_usage_error(*run(capsys, [d / "e.parquet", *args], out), out)


# ------------------------------------------------------------------------- options
VALID_OPTIONS = st.fixed_dictionaries({}, optional={
    "far_range": st.sampled_from(["0.01:0.1", "0.05:0.5", "0.1:1", "0.2:0.9"]),
    "calibration_range": st.sampled_from(["0.5:2.5", "1:3.5", "0:4"]),
    "num_thresholds": st.sampled_from([2, 3, 5, 11]),
    "utility": st.sampled_from(["tpr-tnr", "precision-recall"]),
    "beta": st.sampled_from([0.5, 1.0, 2.0]),
    "epsilon": st.sampled_from([0.1, 0.25, 1.0]),
    "threshold_policy": st.sampled_from(["max-mean-utility", "max-worst-utility", "far:0.05"]),
})
INVALID_OPTION = st.sampled_from([
    ("--far-range", "0.1:0.01"), ("--far-range", "0:0.1"), ("--far-range", "0.1"),
    ("--far-range", "a:b"), ("--far-range", "0.1:1.5"), ("--far-range", "nan:0.5"),
    ("--calibration-range", "2:1"), ("--calibration-range", "1:1"),
    ("--calibration-range", "inf:2"), ("--num-thresholds", "1"), ("--num-thresholds", "0"),
    ("--num-thresholds", "-3"), ("--num-thresholds", "x"), ("--beta", "0"), ("--beta", "-1"),
    ("--beta", "nan"), ("--epsilon", "0"), ("--epsilon", "1.5"), ("--epsilon", "nan"),
    ("--threshold-policy", "far:2"), ("--threshold-policy", "nope"),
    ("--threshold-policy", "far:"), ("--utility", "f1"), ("--metric", "dot"),
    ("--block-mib", "0"), ("--label-column", "missing"), ("--engine", "magic"),
])


def _cli(opts: dict) -> list[str]:
    return [a for k, v in opts.items() for a in (f"--{k.replace('_', '-')}", str(v))]


@given(data=datasets(flags=False), opts=VALID_OPTIONS)
def test_valid_options_give_the_reference_result(capsys, data, opts):
    x, labels, _, _ = data
    with tempfile.TemporaryDirectory() as d:
        src = parquet_file(Path(d) / "e.parquet", x, labels, None, None, False)
        check(capsys, [src, "--metric", "l2", *_cli(opts)], Path(d) / "r.json",
              expected(x, labels, None, None, metric="l2", **opts))


@given(data=datasets(flags=False), opts=VALID_OPTIONS, bad=INVALID_OPTION)
def test_an_invalid_option_is_one_error_line(capsys, data, opts, bad):
    x, labels, _, _ = data
    if bad[0] == "--far-range":
        opts.pop("calibration_range", None)  # an explicit range makes --far-range unused
    with tempfile.TemporaryDirectory() as d:
        src = parquet_file(Path(d) / "e.parquet", x, labels, None, None, False)
        out = Path(d) / "r.json"
        args = [src, "--metric", "l2", *_cli(opts), *bad]
        assert_usage_error(*run(capsys, args, out), out)


def test_expected_rejects_what_the_engine_rejects():
    """The premise of ``check(..., None)``: no evaluable input means an OpisError."""
    x = np.zeros((4, 2), np.float32) + np.arange(4, dtype=np.float32)[:, None]
    assert expected(x, ["a"] * 4, None, None, metric="l2") is None
    with pytest.raises(OpisError):
        evaluate(x, ["a"] * 4, metric="l2", timestamp=False)
