"""End-to-end tests of ``opis evaluate``: exit codes, error lines, output files.

Most runs go in-process through ``opis_cli.cli.main([...])`` (it returns the
exit code; ``capsys`` holds stdout and stderr). A few run the real command in
a subprocess, to prove that no traceback escapes a real process.

Expected values are never taken from the code under test: they come from the
input files themselves (row and label counts, sha256 of the bytes, the
options given) or from comparing two runs that must agree.
"""

from __future__ import annotations

import collections
import datetime
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from opis_cli import __version__
from opis_cli.cli import main
from opis_cli.errors import OpisError

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data"
WEAK = SAMPLE / "digits_weak.parquet"
WEAK_NPY = SAMPLE / "digits_weak.npy"
LABELS_TXT = SAMPLE / "digits_labels.txt"

#: SPEC 8 key names, all of which are part of the contract.
TOP_KEYS = {
    "schema_version", "n_samples", "dim", "metric", "utility", "beta", "epsilon", "opis",
    "epsilon_opis", "calibration_range", "thresholds", "mean_utility",
    "recommended_threshold", "retrieval", "classes", "per_class", "provenance",
}
PER_CLASS_KEYS = {"label", "n", "positives", "negatives", "mean_utility", "far_at_threshold",
                  "frr_at_threshold"}
RECOMMENDED_KEYS = {"policy", "value", "mean_utility", "tpr", "far"}

_TIME_LINE = re.compile(rb'\n\s*"time": "[^"]*",?')


# ---------------------------------------------------------------- helpers


@dataclass
class Run:
    code: int
    out: str
    err: str


@pytest.fixture
def opis(capsys):
    """``opis(*args)`` runs ``opis evaluate ARGS`` in-process."""

    def run(*args) -> Run:
        capsys.readouterr()
        code = main(["evaluate", *(str(a) for a in args)])
        out, err = capsys.readouterr()
        return Run(code, out, err)

    return run


def module_cmd() -> list[str]:
    return [sys.executable, "-m", "opis_cli.cli"]


def script_cmd() -> list[str]:
    """The installed console script (pyproject's [project.scripts])."""
    beside = Path(sys.executable).with_name("opis")
    found = str(beside) if beside.exists() else shutil.which("opis")
    assert found, "the 'opis' console script is not installed (pip install -e .)"
    return [found]


def run_process(cmd: list[str], *args, cwd: Path, columns: int | None = 80) -> Run:
    """``opis evaluate ARGS`` in a real process; ``columns=None``: COLUMNS unset."""
    env = dict(os.environ, COLUMNS=str(columns), PYTHONPATH=str(REPO))
    if columns is None:
        del env["COLUMNS"]
    env.pop("FORCE_COLOR", None)
    proc = subprocess.run([*cmd, "evaluate", *(str(a) for a in args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)
    return Run(proc.returncode, proc.stdout, proc.stderr)


def assert_one_error_line(run: Run, *needles: str) -> str:
    """Exit 2, nothing on stdout, exactly one ``Error: ...`` line naming ``needles``."""
    assert "Traceback" not in run.err + run.out, run.err
    assert run.code == 2, (run.code, run.err)
    assert run.out == ""
    lines = run.err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{run.err}"
    assert run.err.endswith("\n")
    line = lines[0]
    assert line.startswith("Error: "), line
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    return line


def list_column(rows: np.ndarray) -> pa.Array:
    rows = np.asarray(rows, dtype=np.float32)
    return pa.array([list(map(float, r)) for r in rows], type=pa.list_(pa.float32()))


def write_parquet(path: Path, embeddings=None, labels=None, **extra) -> Path:
    cols = {}
    if embeddings is not None:
        cols["embedding"] = list_column(embeddings)
    if labels is not None:
        cols["label"] = pa.array(labels)
    cols.update(extra)
    pq.write_table(pa.table(cols), str(path))
    return path


RNG_EMB = np.random.default_rng(7).normal(size=(12, 3)).astype(np.float32)
RNG_LAB = [f"c{i % 3}" for i in range(12)]


@pytest.fixture
def small(tmp_path) -> Path:
    """12 rows, 3 classes of 4: a valid input."""
    return write_parquet(tmp_path / "small.parquet", RNG_EMB, RNG_LAB)


@pytest.fixture
def outdir(tmp_path) -> Path:
    d = tmp_path / "out"
    d.mkdir()
    return d


def bad(opis, outdir: Path, *args, needles=()) -> str:
    """Run with --json and --curves into ``outdir``; check the error and that nothing is left."""
    run = opis(*args, "--json", outdir / "out.json", "--curves", outdir / "c.csv")
    line = assert_one_error_line(run, *needles)
    assert sorted(os.listdir(outdir)) == [], "output or temp files left behind"
    return line


def load(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def without_time(raw: bytes) -> bytes:
    stripped, n = _TIME_LINE.subn(b"", raw)
    assert n == 1, "provenance.time expected exactly once"
    return stripped


def sample_table() -> pa.Table:
    return pq.read_table(str(WEAK))


@pytest.fixture(scope="module")
def weak_json(tmp_path_factory) -> Path:
    """The sample run with default options, shared by the tests that compare against it."""
    out = tmp_path_factory.mktemp("weak") / "weak.json"
    assert main(["evaluate", str(WEAK), "-q", "--json", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def digits_small(tmp_path_factory) -> Path:
    """The first 600 rows of the weak sample (all 10 classes): quicker option tests."""
    path = tmp_path_factory.mktemp("small") / "digits600.parquet"
    pq.write_table(sample_table().slice(0, 600), str(path))
    return path


def same_result(a: dict, b: dict) -> None:
    """Everything but provenance equal."""
    a = {k: v for k, v in a.items() if k != "provenance"}
    b = {k: v for k, v in b.items() if k != "provenance"}
    assert a == b


# ---------------------------------------------------------------- happy paths


def test_sample_exit_0_tables_on_stdout_nothing_else_on_stderr(opis):
    run = opis(WEAK)
    assert run.code == 0, run.err
    assert run.err == ""  # no progress bar off a terminal, no file written
    assert "OPIS" in run.out and "Traceback" not in run.out
    assert "digit_" in run.out  # the worst-classes table


def test_files_written_are_named_on_stderr_tables_on_stdout(opis, tmp_path, digits_small):
    j, c, rep = tmp_path / "r.json", tmp_path / "c.csv", tmp_path / "rep"
    run = opis(digits_small, "--json", j, "--curves", c, "--report", rep)
    assert run.code == 0, run.err
    assert run.err.splitlines() == [f"wrote {j}", f"wrote {c}", f"wrote {rep / 'report.html'}"]
    assert j.exists() and c.exists() and (rep / "report.html").exists()
    assert "OPIS" in run.out and "wrote" not in run.out
    run = opis(digits_small, "-q", "--json", j)
    assert (run.code, run.out, run.err) == (0, "", "")


def test_pipe_output_is_not_wrapped_at_80_columns(tmp_path, digits_small):
    run = run_process(module_cmd(), digits_small, cwd=tmp_path, columns=None)
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    # the verdict comes first, one sentence on one line; the source line (file, rows,
    # dims, metric ...) is one phrase too: neither is broken
    assert lines[0].startswith("Verdict: ") and lines[0].rstrip().endswith("."), lines[:3]
    source = next(x for x in lines if x.startswith("opis "))
    assert source.rstrip().endswith("excluded"), lines[:8]
    assert max(len(x) for x in lines if x.startswith(("┃", "│", "┏"))) <= 100


def test_json_file_has_the_spec_keys_and_values_from_the_input(weak_json):
    d = load(weak_json)
    assert TOP_KEYS <= set(d)
    assert d["schema_version"] == 1

    table = sample_table()
    dim = table.schema.field("embedding").type.list_size
    labels = table.column("label").to_pylist()
    n = len(labels)
    assert (d["n_samples"], d["dim"]) == (n, dim)
    assert (d["metric"], d["utility"], d["beta"], d["epsilon"]) == ("cosine", "tpr-tnr", 1.0, 0.1)

    cal = d["calibration_range"]
    assert {"lower", "upper", "source", "far_lower", "far_upper"} <= set(cal)
    assert cal["source"] == "far"
    assert cal["lower"] < cal["upper"]
    # exact order statistics: the achieved FAR at the ends is at least the asked one
    assert 0.01 <= cal["far_lower"] < cal["far_upper"] and cal["far_upper"] >= 0.1
    th = d["thresholds"]
    assert len(th) == 101 and len(d["mean_utility"]) == 101
    assert th[0] == cal["lower"] and th[-1] == cal["upper"]
    assert th == sorted(th)

    rt = d["recommended_threshold"]
    assert RECOMMENDED_KEYS <= set(rt)
    assert rt["policy"] == "max-mean-utility"
    assert rt["value"] in th
    assert rt["mean_utility"] == max(d["mean_utility"])
    assert 0 <= rt["tpr"] <= 1 and 0 <= rt["far"] <= 1

    rec = d["retrieval"]
    assert set(rec["recall_at_k"]) == {"1", "2", "4", "8"}
    r = [rec["recall_at_k"][k] for k in ("1", "2", "4", "8")]
    assert all(0 <= v <= 1 for v in r) and r == sorted(r)
    assert 0 <= rec["map_at_r"] <= 1
    assert rec["queries"] == n  # every row is a query with positives in the gallery

    counts = collections.Counter(labels)
    assert d["classes"] == {"evaluated": len(counts), "excluded": 0, "excluded_labels": []}
    assert {c["label"] for c in d["per_class"]} == set(counts)
    for c in d["per_class"]:
        assert PER_CLASS_KEYS <= set(c)
        k = counts[c["label"]]
        assert c["n"] == k
        assert c["positives"] == k * (k - 1)  # ordered pairs, self excluded
        assert c["negatives"] == k * (n - k)
        assert 0 <= c["far_at_threshold"] <= 1 and 0 <= c["frr_at_threshold"] <= 1
    utilities = [c["mean_utility"] for c in d["per_class"]]
    assert utilities == sorted(utilities)  # worst first
    assert "groups" not in d

    prov = d["provenance"]
    assert prov["tool_version"] == __version__
    [src] = prov["inputs"]
    assert Path(src["path"]) == WEAK
    assert src["sha256"] == hashlib.sha256(WEAK.read_bytes()).hexdigest()
    assert prov["versions"]["numpy"] == np.__version__
    stamp = datetime.datetime.fromisoformat(prov["time"])
    assert stamp.tzinfo is not None


def test_json_to_stdout_is_only_json_and_text_goes_to_stderr(opis, weak_json):
    run = opis(WEAK, "--json", "-")
    assert run.code == 0, run.err
    d = json.loads(run.out)  # the JSON alone on stdout; the tables on stderr
    assert "OPIS" in run.err
    assert "OPIS" not in run.out.replace('"opis"', "").replace('"epsilon_opis"', "")
    same_result(d, load(weak_json))


def test_quiet_prints_nothing(opis, tmp_path, digits_small):
    run = opis(digits_small, "--quiet", "--json", tmp_path / "r.json")
    assert (run.code, run.out, run.err) == (0, "", "")
    assert load(tmp_path / "r.json")["n_samples"] == 600
    run = opis(digits_small, "-q", "--json", "-")
    assert run.code == 0 and run.err == ""
    assert json.loads(run.out)["schema_version"] == 1


def test_npy_with_labels_txt_gives_the_parquet_result(opis, tmp_path, weak_json):
    run = opis(WEAK_NPY, "--labels", LABELS_TXT, "-q", "--json", tmp_path / "n.json")
    assert run.code == 0, run.err
    p, n = load(weak_json), load(tmp_path / "n.json")
    assert n["opis"] == p["opis"] and n["epsilon_opis"] == p["epsilon_opis"]
    same_result(p, n)
    shas = {s["path"]: s["sha256"] for s in n["provenance"]["inputs"]}
    assert shas == {str(WEAK_NPY): hashlib.sha256(WEAK_NPY.read_bytes()).hexdigest(),
                    str(LABELS_TXT): hashlib.sha256(LABELS_TXT.read_bytes()).hexdigest()}


@pytest.mark.parametrize("suffix", ["parquet", "csv"])
def test_curves_table_one_row_per_class_and_threshold(opis, tmp_path, suffix, digits_small):
    curves = tmp_path / f"x.{suffix}"
    k = 7
    run = opis(digits_small, "-q", "--num-thresholds", k, "--curves", curves, "--json", tmp_path / "r.json")
    assert run.code == 0, run.err
    table = pq.read_table(str(curves)) if suffix == "parquet" else pacsv.read_csv(str(curves))
    cols = table.to_pydict()
    labels = set(pq.read_table(str(digits_small)).column("label").to_pylist())
    assert len(labels) == 10
    assert table.num_rows == (len(labels) + 1) * k  # + the block-level class-fairness rows
    assert {"level", "label", "threshold", "utility", "tp", "fp", "tpr", "far", "fdr",
            "garbe"} <= set(cols)
    assert set(cols["level"]) == {"class", "class-fairness"}
    per_label = collections.Counter(str(v) for v, lev in zip(cols["label"], cols["level"])
                                    if lev == "class")
    assert per_label == {lab: k for lab in labels}
    thresholds = load(tmp_path / "r.json")["thresholds"]
    for lab in labels:
        rows = [t for t, l in zip(cols["threshold"], cols["label"]) if str(l) == lab]
        assert rows == pytest.approx(thresholds, rel=1e-12)
    assert all(0 <= u <= 1 for u in cols["utility"])


def test_group_column_adds_a_groups_block_and_leaves_classes_alone(opis, tmp_path, weak_json):
    run = opis(WEAK, "-q", "--group-column", "group", "--json", tmp_path / "g.json")
    assert run.code == 0, run.err
    plain, d = load(weak_json), load(tmp_path / "g.json")
    groups = collections.Counter(sample_table().column("group").to_pylist())
    block = d["groups"]
    assert {"opis", "epsilon_opis", "per_class", "recommended_threshold"} <= set(block)
    assert {g["label"]: g["n"] for g in block["per_class"]} == dict(groups)
    assert d["opis"] == plain["opis"] and d["per_class"] == plain["per_class"]
    assert block["opis"] >= 0


def _spec_checks():
    """(options, check on the JSON) for every option of the contract."""
    return [
        (["--metric", "l2"], lambda d: d["metric"] == "l2"),
        (["--far-range", "0.05:0.2"],
         lambda d: d["calibration_range"]["source"] == "far"
         and d["calibration_range"]["far_lower"] >= 0.05
         and d["calibration_range"]["far_upper"] >= 0.2),
        (["--calibration-range", "0.2:0.5"],
         lambda d: (d["calibration_range"]["lower"], d["calibration_range"]["upper"],
                    d["calibration_range"]["source"]) == (0.2, 0.5, "explicit")
         and d["thresholds"][0] == 0.2 and d["thresholds"][-1] == 0.5),
        (["--num-thresholds", "11"], lambda d: len(d["thresholds"]) == 11),
        (["--utility", "precision-recall"], lambda d: d["utility"] == "precision-recall"),
        (["--beta", "2"], lambda d: d["beta"] == 2.0),
        (["--epsilon", "0.3"], lambda d: d["epsilon"] == 0.3),
        (["--threshold-policy", "max-worst-utility"],
         lambda d: d["recommended_threshold"]["policy"] == "max-worst-utility"),
        (["--threshold-policy", "far:0.05"],
         lambda d: d["recommended_threshold"]["far"] <= 0.05
         and d["recommended_threshold"]["policy"].startswith("far")),
        (["--debug"], lambda d: d["n_samples"] == 600),
    ]


@pytest.mark.parametrize("options,check", _spec_checks(),
                         ids=[" ".join(o) for o, _ in _spec_checks()])
def test_every_option_is_accepted(opis, tmp_path, options, check, digits_small):
    run = opis(digits_small, "-q", *options, "--json", tmp_path / "r.json")
    assert run.code == 0, run.err
    assert check(load(tmp_path / "r.json"))


def test_precision_recall_and_l2_change_the_numbers(opis, tmp_path, digits_small):
    """The options are not just echoed: they change the result."""
    for name, opts in (("a", []), ("b", ["--metric", "l2"]), ("c", ["--utility",
                                                                     "precision-recall"])):
        assert opis(digits_small, "-q", *opts, "--json", tmp_path / f"{name}.json").code == 0
    a, b, c = (load(tmp_path / f"{x}.json") for x in "abc")
    assert a["thresholds"] != b["thresholds"]
    assert a["thresholds"] == c["thresholds"] and a["mean_utility"] != c["mean_utility"]


def test_embedding_columns_glob_gives_the_list_column_result(opis, tmp_path, weak_json):
    table = sample_table()
    emb = np.asarray(table.column("embedding").to_pylist(), dtype=np.float32)
    cols = {f"emb_{j}": pa.array(emb[:, j]) for j in range(emb.shape[1])}
    cols["label"] = table.column("label")
    wide = tmp_path / "wide.parquet"
    pq.write_table(pa.table(cols), str(wide))
    run = opis(wide, "-q", "--embedding-columns", "emb_*", "--json", tmp_path / "b.json")
    assert run.code == 0, run.err
    same_result(load(weak_json), load(tmp_path / "b.json"))


def test_label_query_and_gallery_columns(opis, tmp_path, digits_small):
    table = pq.read_table(str(digits_small))
    n = table.num_rows
    q = np.arange(n) % 2 == 0
    path = tmp_path / "renamed.parquet"
    pq.write_table(pa.table({"embedding": table.column("embedding"),
                             "digit": table.column("label"),
                             "q": pa.array(q), "g": pa.array(np.ones(n, bool))}), str(path))
    run = opis(path, "-q", "--label-column", "digit", "--query-column", "q",
               "--gallery-column", "g", "--json", tmp_path / "r.json")
    assert run.code == 0, run.err
    d = load(tmp_path / "r.json")
    assert d["retrieval"]["queries"] == int(q.sum())
    assert {c["label"] for c in d["per_class"]} == set(table.column("label").to_pylist())
    # without --label-column the file has no 'label' column: a clean error
    assert_one_error_line(opis(path, "-q"), str(path), "'label'", "digit")


def test_two_runs_are_byte_identical_apart_from_time(opis, tmp_path, weak_json):
    assert opis(WEAK, "-q", "--json", tmp_path / "b.json").code == 0
    a, b = weak_json.read_bytes(), (tmp_path / "b.json").read_bytes()
    assert without_time(a) == without_time(b)


def test_block_size_does_not_change_the_json(opis, tmp_path, weak_json):
    assert opis(WEAK, "-q", "--block-mib", 1, "--json", tmp_path / "b.json").code == 0
    assert without_time(weak_json.read_bytes()) == \
        without_time((tmp_path / "b.json").read_bytes())


# ---------------------------------------------------------------- bad input: exit 2, one line


def test_missing_file(opis, outdir, tmp_path):
    missing = tmp_path / "nope.parquet"
    bad(opis, outdir, missing, needles=(str(missing), "no such file"))


def test_corrupt_parquet(opis, outdir, tmp_path):
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"this is not a parquet file\x00\x01" * 20)
    bad(opis, outdir, garbage, needles=(str(garbage), "Parquet"))


def test_missing_embedding_column_lists_columns(opis, outdir, tmp_path):
    path = tmp_path / "vec.parquet"
    pq.write_table(pa.table({"vec": list_column(RNG_EMB), "label": RNG_LAB,
                             "extra": list(range(12))}), str(path))
    line = bad(opis, outdir, path, needles=(str(path), "'embedding'"))
    assert re.search(r"vec, label, extra", line), line


def test_missing_label_column(opis, outdir, small):
    bad(opis, outdir, small, "--label-column", "cls",
        needles=(str(small), "'cls'", "embedding, label"))


def test_ragged_list_embeddings(opis, outdir, tmp_path):
    rows = [[1.0, 2.0]] * 5 + [[1.0]] + [[1.0, 2.0]] * 6
    path = tmp_path / "ragged.parquet"
    pq.write_table(pa.table({"embedding": pa.array(rows), "label": RNG_LAB}), str(path))
    line = bad(opis, outdir, path, needles=(str(path), "'embedding'"))
    assert re.search(r"\brow 5\b", line), line


@pytest.mark.parametrize("column", [pa.array([f"x{i}" for i in range(12)]),
                                    pa.array([["a", "b"]] * 12)], ids=["string", "list-of-string"])
def test_non_numeric_embedding_column(opis, outdir, tmp_path, column):
    path = tmp_path / "text.parquet"
    pq.write_table(pa.table({"embedding": column, "label": RNG_LAB}), str(path))
    line = bad(opis, outdir, path, needles=(str(path), "'embedding'", "string"))
    assert "number" in line, line


@pytest.mark.parametrize("value,word", [(np.nan, "NaN"), (np.inf, "infinity"),
                                        (-np.inf, "infinity")])
def test_non_finite_value_names_the_row(opis, outdir, tmp_path, value, word):
    emb = RNG_EMB.copy()
    emb[7, 1] = value
    path = write_parquet(tmp_path / "nonfinite.parquet", emb, RNG_LAB)
    line = bad(opis, outdir, path, needles=(str(path), word))
    assert re.search(r"\brow 7\b", line), line


def test_zero_vector_under_cosine_names_the_row_and_l2_accepts_it(opis, outdir, tmp_path):
    emb = RNG_EMB.copy()
    emb[4] = 0
    path = write_parquet(tmp_path / "zero.parquet", emb, RNG_LAB)
    line = bad(opis, outdir, path, needles=(str(path), "zero"))
    assert re.search(r"\brow 4\b", line), line
    run = opis(path, "-q", "--metric", "l2", "--json", outdir / "l2.json")
    assert run.code == 0, run.err
    assert load(outdir / "l2.json")["n_samples"] == 12


def test_label_count_mismatch(opis, outdir, tmp_path):
    npy = tmp_path / "e.npy"
    np.save(npy, RNG_EMB)
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(RNG_LAB[:-1]) + "\n", encoding="utf-8")
    bad(opis, outdir, npy, "--labels", labels, needles=(str(labels), "11", "12"))


def test_null_label(opis, outdir, tmp_path):
    path = write_parquet(tmp_path / "nulls.parquet", RNG_EMB, RNG_LAB[:3] + [None] + RNG_LAB[4:])
    line = bad(opis, outdir, path, needles=(str(path), "'label'", "null"))
    assert re.search(r"\brow 3\b", line), line


@pytest.mark.parametrize("labels,evaluated", [
    (["a"] * 11 + ["b"], 1),               # b is a singleton: only 'a' can be evaluated
    ([f"s{i}" for i in range(12)], 0),     # all singletons: no positives anywhere
], ids=["one-evaluable", "all-singletons"])
def test_fewer_than_two_evaluated_classes(opis, outdir, tmp_path, labels, evaluated):
    path = write_parquet(tmp_path / "few.parquet", RNG_EMB, labels)
    bad(opis, outdir, path, needles=(str(path), f"only {evaluated} class", "at least 2"))


@pytest.mark.parametrize("value", ["0.5:0.5", "0.6:0.2"])
def test_degenerate_calibration_range(opis, outdir, small, value):
    bad(opis, outdir, small, "--calibration-range", value,
        needles=("--calibration-range", value, "degenerate"))


def test_reversed_far_range_says_so_and_suggests_the_swap(opis, outdir, small):
    line = bad(opis, outdir, small, "--far-range", "0.1:0.01",
               needles=("--far-range", "0.1:0.01"))
    assert line == ("Error: --far-range 0.1:0.01: the lower bound must be below the upper "
                    "(did you mean 0.01:0.1?)")


@pytest.mark.parametrize("far", ["0.1:0.1", "0:0.1", "0.1:2"])
def test_degenerate_far_range(opis, outdir, small, far):
    bad(opis, outdir, small, "--far-range", far, needles=("--far-range", far, "degenerate",
                                                          "0 < A < B <= 1"))


@pytest.mark.parametrize("args,expected", [
    (["--metric", "cos"], "Error: Invalid value for '--metric': 'cos' is not one of 'cosine', "
                          "'l2'; did you mean 'cosine'?"),
    (["--metric", "L2"], "did you mean 'l2'?"),
    (["--utility", "pr"], "did you mean 'precision-recall'?"),
    (["--format", "parket"], "did you mean 'parquet'?"),
    (["--max", "opsi=0.1"], "Error: unknown metric 'opsi' in --max opsi=0.1; did you mean 'opis'?"),
    (["--min", "recal_at_1=0.9"], "did you mean 'recall_at_1'?"),
])
def test_typos_get_a_did_you_mean(opis, args, expected):
    r = opis(WEAK, *args)
    assert r.code == 2 and r.out == "" and r.err.count("\n") == 1, r.err
    assert expected in r.err and "Value error" not in r.err, r.err


def test_a_choice_far_from_every_name_lists_them(opis):
    r = opis(WEAK, "--metric", "zzz")
    assert r.code == 2 and "'zzz' is not one of 'cosine', 'l2'" in r.err
    assert "did you mean" not in r.err and "Value error" not in r.err


def test_one_class_file_says_one_class_found(opis, tmp_path):
    path = write_parquet(tmp_path / "one.parquet", RNG_EMB, ["only"] * len(RNG_EMB))
    r = opis(path)
    assert r.code == 2 and r.err.count("\n") == 1
    assert r.err.startswith(f"Error: {path}: 1 class found, need at least 2"), r.err


def test_malformed_far_range(opis, outdir, small):
    bad(opis, outdir, small, "--far-range", "abc", needles=("--far-range", "abc", "LO:HI"))


def test_far_range_selecting_one_distance_for_both_ends(opis, outdir, tmp_path):
    # two classes on orthogonal axes: every negative pair is at cosine distance exactly 1
    emb = np.array([[1, 0], [1, 0], [2, 0], [0, 1], [0, 3], [0, 1]], dtype=np.float32)
    path = write_parquet(tmp_path / "flat.parquet", emb, ["a"] * 3 + ["b"] * 3)
    line = bad(opis, outdir, path, needles=("--far-range", "0.01:0.1", "degenerate"))
    assert re.search(r"distances 1 and 1", line), line  # why: both ends are the same distance


@pytest.mark.parametrize("options,needles", [
    (["--threshold-policy", "far:2"], ("--threshold-policy", "far:2")),
    (["--threshold-policy", "best"], ("--threshold-policy", "best")),
    (["--num-thresholds", "1"], ("--num-thresholds", "2")),
    (["--epsilon", "0"], ("--epsilon",)),
    (["--epsilon", "1.5"], ("--epsilon",)),
    (["--beta", "0"], ("--beta",)),
    (["--calibration-range", "0.1:inf"], ("--calibration-range", "finite")),
    (["--bogus"], ("--bogus",)),
    (["--metric", "manhattan"], ("--metric", "manhattan")),
    (["--utility", "accuracy"], ("--utility", "accuracy")),
    (["--num-thresholds", "many"], ("--num-thresholds",)),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_bad_options(opis, outdir, small, options, needles):
    bad(opis, outdir, small, *options, needles=needles)


def test_missing_path_argument_is_a_usage_error(capsys):
    assert main(["evaluate"]) == 2
    out, err = capsys.readouterr()
    assert_one_error_line(Run(2, out, err), "PATH")


# ---------------------------------------------------------------- bugs found by these tests


def test_threshold_policy_text_is_shown_verbatim(opis, outdir, small):
    # ':abc:' must not be rendered as an emoji (rich emoji codes in the message)
    bad(opis, outdir, small, "--threshold-policy", "far:abc",
        needles=("--threshold-policy far:abc",))


def test_file_name_with_brackets_is_shown_verbatim(opis, outdir, tmp_path):
    # '[x]' must not be swallowed as rich markup
    missing = tmp_path / "data[x].parquet"
    bad(opis, outdir, missing, needles=(str(missing), "no such file"))


def test_bad_curves_name_leaves_no_json_behind(opis, outdir, small):
    run = opis(small, "-q", "--json", outdir / "out.json", "--curves", outdir / "c.xyz")
    assert_one_error_line(run, "c.xyz", ".csv")
    assert sorted(os.listdir(outdir)) == [], "out.json written although the run failed"


def test_curves_in_missing_folder_leaves_no_json_behind(opis, outdir, small):
    run = opis(small, "-q", "--json", outdir / "out.json",
               "--curves", outdir / "nodir" / "c.csv")
    assert_one_error_line(run, "nodir")
    assert sorted(os.listdir(outdir)) == [], "out.json written although the run failed"


def test_json_in_missing_folder(opis, outdir, small):
    bad_json = outdir / "nodir" / "out.json"
    run = opis(small, "-q", "--json", bad_json)
    assert_one_error_line(run, str(bad_json), "nodir")
    assert sorted(os.listdir(outdir)) == []


def test_block_mib_error_names_the_option(opis, outdir, small):
    bad(opis, outdir, small, "--block-mib", "0", needles=("--block-mib",))


@pytest.mark.parametrize("option,value,keyword", [
    ("--beta", "0", "beta"), ("--epsilon", "1.5", "epsilon"),
    ("--num-thresholds", "1", "num_thresholds"), ("--far-range", "abc", "far_range"),
    ("--threshold-policy", "far:2", "threshold_policy"),
])
def test_the_api_and_the_command_say_the_same(opis, outdir, small, option, value, keyword):
    """One constraint, one message (opis_cli.options), whoever checks it."""
    import opis_cli

    with pytest.raises(OpisError) as e:
        number = keyword in ("beta", "epsilon", "num_thresholds")
        opis_cli.evaluate(RNG_EMB, RNG_LAB, **{keyword: float(value) if number else value})
    line = bad(opis, outdir, small, option, value, needles=(option,))
    assert line == f"Error: {e.value}"


def _commands():
    import typer.main

    from opis_cli.cli import app

    group = typer.main.get_command(app)
    return group, sorted(group.commands.items())


def test_every_command_and_option_has_help():
    group, commands = _commands()
    assert {name for name, _ in commands} == {"evaluate", "calibrate", "compare", "gate", "report"}
    missing = [f"opis {p.name}" for p in group.params if not (p.help or "").strip()]
    for name, cmd in commands:
        if not (cmd.help or "").strip():
            missing.append(f"opis {name}")
        missing += [f"opis {name} {p.opts[0] if p.opts else p.name}" for p in cmd.params
                    if not (getattr(p, "help", None) or "").strip()]
    assert missing == []


COMMANDS = ["evaluate", "calibrate", "compare", "gate", "report"]
#: the help panels, spelled as the issue (26) names them, in their order
PANELS = ["Input", "Range and threshold", "Engine", "Outputs", "Gate", "Trackers", "Diagnosis",
          "Advanced"]


def _help(capsys, monkeypatch, *args, columns=80) -> str:
    monkeypatch.setenv("COLUMNS", str(columns))
    capsys.readouterr()
    assert main(list(args)) == 0
    return capsys.readouterr().out


_OPTION_ROW = re.compile(r"^\u2502 \*?\s{0,6}(--[a-z0-9-]+)(?:\s+(-[a-z]))?(?:\s{2,}(\S+))?")


def _option_rows(text: str) -> dict[str, str]:
    """The option rows of rich help panels: option name -> what stands after it
    (the metavar, or the first word of the help text of a flag)."""
    rows = {}
    for line in text.splitlines():
        m = _OPTION_ROW.match(line)
        if m:
            rows[m.group(1)] = m.group(3) or ""
    return rows


@pytest.mark.parametrize("name", COMMANDS)
def test_help_all_lists_every_option_and_help_all_but_advanced(capsys, monkeypatch, name):
    group, commands = _commands()
    every = _help(capsys, monkeypatch, name, "--help-all", columns=400)
    short = _help(capsys, monkeypatch, name, "--help", columns=400)
    for p in dict(commands)[name].params:
        for opt in p.opts if p.param_type_name == "option" else ():
            assert opt in every, f"opis {name} --help-all does not show {opt}"
            if not opt.startswith("--"):
                continue
            advanced = getattr(p, "rich_help_panel", None) == "Advanced"
            shown = opt in _option_rows(short)
            assert shown != advanced, f"opis {name} --help: {opt} (advanced: {advanced})"
    assert "--help-all" in short  # the examples block says where the rest is


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_sits_in_a_named_panel(name):
    group, commands = _commands()
    for p in dict(commands)[name].params:
        if p.param_type_name == "option":
            assert getattr(p, "rich_help_panel", None) in PANELS, (name, p.opts)


@pytest.mark.parametrize("name", COMMANDS)
def test_help_at_80_columns_fits(capsys, monkeypatch, name):
    """No truncated name or text, no <bool>, one metavar style, panels in order, examples."""
    group, commands = _commands()
    for flag in ("--help", "--help-all"):
        out = _help(capsys, monkeypatch, name, flag)
        assert "\u2026" not in out, f"opis {name} {flag}: truncated text"
        assert max(len(line) for line in out.splitlines()) <= 80
        assert not re.search(r"<[a-z]+>", out), f"opis {name} {flag}: a <type> metavar"
        titles = re.findall(r"\u256d\u2500 (.+?) \u2500", out)
        named = [t for t in titles if t in PANELS]
        assert named == sorted(named, key=PANELS.index), titles
        examples = out.split("Examples:")[1].split("More options")[0]
        # the examples at the top: under the summary, above the first panel
        assert out.index("Examples:") < out.index("\u256d"), f"opis {name} {flag}"
        commands_shown = re.findall(r"\$ (opis .+)", examples)
        assert 2 <= len(commands_shown) <= 3 and all(c.split()[1] == name
                                                     for c in commands_shown)
        # every metavar is UPPERCASE (PATH, INT, METRIC=V, A:B) or a short choice list;
        # a flag is followed by its help text (a capitalised word)
        flags = {o for p in dict(commands)[name].params if getattr(p, "is_flag", False)
                 for o in p.opts}
        for opt, m in _option_rows(out).items():
            if opt in flags or opt == "--help":
                assert m[:1].isupper() and m[1:2].islower(), (opt, m)
            else:
                assert m == m.upper() or re.fullmatch(r"[a-z0-9-]+(\|[a-z0-9-]+)+", m), (opt, m)


def test_flags_show_no_metavar(capsys, monkeypatch):
    rows = _option_rows(_help(capsys, monkeypatch, "evaluate", "--help-all", columns=200))
    assert {f: rows[f] for f in ("--verification", "--quiet", "--mlflow", "--debug")} == {
        "--verification": "Also", "--quiet": "No", "--mlflow": "Log", "--debug": "Show"}
    assert rows["--json"] == "PATH" and rows["--max"] == "METRIC=V" and rows["--k"] == "INT"


def test_evaluate_help_everyday_panels_fit_in_about_100_lines(capsys, monkeypatch):
    out = _help(capsys, monkeypatch, "evaluate", "--help")
    lines = out.splitlines()
    start = next(i for i, x in enumerate(lines) if "\u256d\u2500 Input" in x)
    end = max(i for i, x in enumerate(lines) if x.startswith("\u2570"))
    assert end - start + 1 <= 105, end - start + 1
    assert len(lines) <= 130
    assert len(_help(capsys, monkeypatch, "evaluate", "--help-all").splitlines()) > len(lines)


# ---------------------------------------------------------------- --debug


def test_debug_raises_in_process(tmp_path):
    with pytest.raises(OpisError):
        main(["evaluate", str(tmp_path / "nope.parquet"), "--debug"])


# ---------------------------------------------------------------- real processes


def test_process_happy_path_json_on_stdout(tmp_path, digits_small):
    run = run_process(module_cmd(), digits_small, "--json", "-", cwd=tmp_path)
    assert run.code == 0, run.err
    assert "Traceback" not in run.err
    d = json.loads(run.out)
    assert d["n_samples"] == 600
    assert "OPIS" in run.err


def test_process_console_script_bad_input_is_one_line(tmp_path):
    emb = RNG_EMB.copy()
    emb[9, 0] = np.nan
    path = write_parquet(tmp_path / "nan.parquet", emb, RNG_LAB)
    out = tmp_path / "out"
    out.mkdir()
    run = run_process(script_cmd(), path, "--json", out / "r.json", "--curves", out / "c.csv",
                      cwd=tmp_path)
    line = assert_one_error_line(run, str(path), "NaN")
    assert re.search(r"\brow 9\b", line)
    assert os.listdir(out) == []


def test_process_long_message_stays_one_line_in_a_narrow_terminal(tmp_path):
    names = [f"a_rather_long_column_name_{i}" for i in range(12)]
    path = tmp_path / "wide.parquet"
    pq.write_table(pa.table({n: list(range(4)) for n in names}), str(path))
    run = run_process(module_cmd(), path, cwd=tmp_path, columns=40)
    line = assert_one_error_line(run, "no column", names[0], names[-1])
    assert len(line) > 200


def test_process_usage_error_is_one_line(tmp_path):
    run = run_process(module_cmd(), WEAK, "--metric", "manhattan", cwd=tmp_path)
    assert_one_error_line(run, "--metric")


def test_process_debug_shows_a_traceback(tmp_path):
    missing = tmp_path / "nope.parquet"
    run = run_process(module_cmd(), missing, "--debug", cwd=tmp_path)
    assert run.code != 0
    assert "Traceback" in run.err
    assert str(missing) in run.err


def test_process_markup_like_file_name_does_not_crash(tmp_path):
    missing = tmp_path / "data[/].parquet"
    run = run_process(module_cmd(), missing, cwd=tmp_path)
    assert_one_error_line(run, str(missing))


def test_python_api_frames_match_the_result():
    import opis_cli
    from opis_cli.io import read_dataset

    ds = read_dataset(str(SAMPLE / "digits_weak.parquet"), group_column="group")
    r = opis_cli.evaluate(ds.embeddings, ds.labels, groups=ds.groups, num_thresholds=11)
    pc = r.per_class_frame()
    assert list(pc["label"]) == [c.label for c in r.classes.per_class]
    assert pc["mean_utility"].is_monotonic_increasing
    curves = r.curves_frame()
    # + the K block-level rows of each block (class-fairness, group-fairness)
    assert len(curves) == (r.classes.evaluated + r.groups.evaluated + 2) * 11
    first = curves[(curves.level == "class") & (curves.label == pc.label[0])]
    assert np.allclose(first["utility"].to_numpy(), r.curves.utility[r.curves.labels.index(pc.label[0])])


@pytest.mark.parametrize("far,end", [
    ("0.5:0.1", ": the lower bound must be below the upper (did you mean 0.1:0.5?)\n"),
    ("0:0.1", " is degenerate: need 0 < A < B <= 1 (global false accept rates)\n"),
    ("0.1:2", " is degenerate: need 0 < A < B <= 1 (global false accept rates)\n")])
def test_a_bad_far_range_is_refused_even_when_an_explicit_range_overrides_it(opis, far, end):
    """Issue 16: a typo in --far-range must not pass silently beside --calibration-range."""
    r = opis(WEAK, "--far-range", far, "--calibration-range", "0.2:0.5")
    assert r.code == 2
    assert r.err == f"Error: --far-range {far}{end}"


def test_pipe_with_columns_lays_tables_out_at_columns_and_keeps_lines_whole(tmp_path,
                                                                            digits_small):
    run = run_process(module_cmd(), digits_small, cwd=tmp_path, columns=60)
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert lines[0].startswith("Verdict: ") and lines[0].rstrip().endswith("."), lines[:3]
    source = next(x for x in lines if x.startswith("opis "))
    assert source.rstrip().endswith("excluded"), lines[:8]
    assert len(lines[0]) > 60 and len(source) > 60  # a phrase is not broken to fit
    table = [x for x in lines if x.startswith(("\u2503", "\u2502", "\u250f"))]
    assert table and max(len(x) for x in table) <= 60


_RUN_ENTRY = """
import atexit, sys, threading, time
from pathlib import Path
marks = Path(sys.argv[1])
def late():  # a non-daemon thread still working when the command returns
    time.sleep(0.5)
    (marks / "thread").write_text("done")
threading.Thread(target=late).start()
atexit.register(lambda: (marks / "atexit").write_text("ran"))
sys.argv = ["opis", *sys.argv[2:]]
from opis_cli.cli import run
run()
raise SystemExit("run() returned")
"""


@pytest.mark.parametrize("case", ["ok", "input-error"])
def test_console_script_exit_waits_for_threads_runs_atexit_keeps_the_code(case, tmp_path,
                                                                             digits_small):
    """``opis`` (``cli.run``) ends with ``os._exit`` after :func:`main`: other threads
    are waited for, the ``atexit`` handlers run, the exit code is main's, and
    the JSON is the bytes that ``main`` writes in process."""
    marks = tmp_path / "marks"
    marks.mkdir()
    out = tmp_path / "run.json"
    args = (["evaluate", str(digits_small), "--json", str(out), "-q"] if case == "ok"
            else ["evaluate", str(tmp_path / "missing.parquet")])
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", _RUN_ENTRY, str(marks), *args], env=env,
                          capture_output=True, text=True, timeout=120)
    assert (marks / "thread").read_text() == "done"
    assert (marks / "atexit").read_text() == "ran"
    assert "run() returned" not in proc.stderr
    if case == "ok":
        assert proc.returncode == 0, proc.stderr
        here = tmp_path / "here.json"
        assert main(["evaluate", str(digits_small), "--json", str(here), "-q"]) == 0
        a, b = (json.loads(p.read_text()) for p in (out, here))
        a["provenance"].pop("time"), b["provenance"].pop("time")
        assert a == b
    else:
        assert proc.returncode == 2 and proc.stderr.startswith("Error: "), proc.stderr
        assert "Traceback" not in proc.stderr
