"""Start-up: what ``opis evaluate`` loads before it can fail, and the shortcuts that
make an input error quick (issue 26): the Parquet footer's column names read
without pyarrow, the column check before the reader, Arrow columns converted
without pandas or ``pyarrow.compute``, gate rules parsed without numpy.

The checks are on what is imported (``sys.modules`` of a fresh interpreter), never
on wall-clock time; each shortcut is compared with what it stands in for
(pyarrow's schema, ``Array.to_pylist``, the reader's own error).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from opis_cli.errors import InputError
from opis_cli.io import ReadOptions, read_dataset
from opis_cli.io._columns import strings_from_arrow, values_to_numpy
from opis_cli.io.dataset import check_columns
from opis_cli.io.parquet_footer import column_names

REPO = Path(__file__).resolve().parents[1]
SAMPLE = "sample_data/digits_weak.parquet"
#: never needed to report an input error
HEAVY = ("numba", "faiss", "pandas", "matplotlib", "pyarrow.compute")


def _loaded(*args: str, cwd: Path = REPO) -> tuple[int, str, set[str]]:
    """Run ``opis ARGS`` in a fresh interpreter: (exit code, stderr, the watched
    modules loaded by then)."""
    watched = HEAVY + ("numpy", "pyarrow", "pydantic")
    code = ("import sys\nfrom opis_cli.cli import main\nrc = main(sys.argv[1:])\n"
            f"print('loaded:', *sorted(m for m in {watched!r} if m in sys.modules), "
            "file=sys.stderr)\nsys.exit(rc)")
    env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="200")
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=env, timeout=120, cwd=cwd)
    *rest, last = proc.stderr.strip().splitlines()
    assert last.startswith("loaded:"), proc.stderr
    return proc.returncode, "\n".join(rest), set(last.split()[1:])


# ---------------------------------------------------------------- what an error loads


def test_a_missing_file_loads_no_numpy():
    code, err, loaded = _loaded("evaluate", "no-such.parquet", "--max", "opis=0.02")
    assert code == 2 and err == "Error: no-such.parquet: no such file or directory"
    assert not loaded & {*HEAVY, "numpy", "pyarrow", "pydantic"}, loaded


@pytest.mark.parametrize("args", [
    ("evaluate", SAMPLE, "--label-column", "nope", "--json", "-"),
    ("calibrate", SAMPLE, "--label-column", "nope"),
    ("calibrate", SAMPLE, "--test", SAMPLE, "--label-column", "nope"),
], ids=["evaluate", "calibrate", "calibrate-test"])
def test_a_missing_column_is_found_before_pyarrow_and_numpy(args):
    code, err, loaded = _loaded(*args)
    assert code == 2
    assert err == (f"Error: {SAMPLE}: no column 'nope'; columns are: embedding, label, group, "
                   "is_query, is_gallery (use --label-column)")
    assert not loaded & {*HEAVY, "numpy", "pyarrow", "pydantic"}, loaded


def test_a_column_of_the_wrong_type_is_the_reader_s_and_loads_no_engine(tmp_path):
    # the footer gives names only: a type error is left to the reader (pyarrow loads)
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"embedding": [[0.0, 1.0], [1.0, 0.0]], "label": [[1], [2]]}), path)
    code, err, loaded = _loaded("evaluate", str(path))
    assert code == 2 and "column 'label' has type list<element: int64>" in err, err
    assert "pyarrow" in loaded and not loaded & set(HEAVY), loaded


def _heavy_after(code: str) -> set[str]:
    """The modules of HEAVY loaded after running ``code`` in a fresh interpreter."""
    code += f"\nimport sys\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), check=True)
    return set(filter(None, out.stdout.strip().split(",")))


def test_reading_parquet_loads_no_pandas_or_compute():
    """opis's Parquet reader adds none of HEAVY to what pyarrow's own reading of
    the file loads (nothing on recent pyarrow; some pyarrow releases, e.g. 15,
    load pandas and pyarrow.compute themselves while reading a file written by
    pandas)."""
    pyarrow_own = _heavy_after(
        "import pyarrow.parquet as pq\n"
        f"f = pq.ParquetFile({SAMPLE!r})\n"
        "f.read_row_group(0)\n"
        "for _ in f.iter_batches(): pass\n"
        "f.read()")
    opis = _heavy_after(
        "from opis_cli.io import read_dataset\n"
        f"ds = read_dataset({SAMPLE!r}, group_column='group')\n"
        "assert ds.n_samples > 0 and ds.groups is not None")
    assert opis <= pyarrow_own, (opis, pyarrow_own)


def test_gate_rules_parse_without_numpy():
    code = ("import sys\nfrom opis_cli.gate.sides import EvaluateGate\n"
            "g = EvaluateGate.plan({'max': ['opis=0.02'], 'min': ['recall_at_1=0.5']})\n"
            "assert len(g.rules) == 2\nprint('numpy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), check=True)
    assert out.stdout.strip() == "False"


def test_the_rules_bootstrap_metrics_are_the_bootstrap_s():
    from opis_cli.gate import rules
    from opis_cli.metrics import bootstrap

    assert rules.BOOTSTRAP_METRICS == bootstrap.BOOTSTRAP_METRICS


def test_faiss_version_from_its_distribution_is_the_module_s():
    faiss = pytest.importorskip("faiss")
    from opis_cli.api import _versions

    assert _versions()["faiss"] == faiss.__version__


# ---------------------------------------------------------------- the footer's names


def _tables() -> dict[str, pa.Table]:
    """Tables whose Parquet schemas take every path of the footer reader: nested
    columns (list, struct, map: subtrees to skip), more than 15 columns (the long
    list header), non-ASCII and empty names, dictionaries, no rows."""
    rng = np.random.default_rng(7)
    n = 5
    wide = {f"c{i}": rng.normal(size=n) for i in range(40)}
    return {
        "sample": pq.read_table(REPO / SAMPLE),
        "nested": pa.table({
            "emb": pa.array([[1.0, 2.0]] * n, type=pa.list_(pa.float32(), 2)),
            "s": pa.array([{"x": 1, "y": [1.0, None], "z": {"w": "a"}}] * n),
            "m": pa.array([[("k", 1)]] * n, type=pa.map_(pa.string(), pa.int64())),
            "ll": pa.array([[[1], [2, 3]]] * n),
            "label": pa.array(["a", "b", "a", "é", "b"]).dictionary_encode(),
            "né✓": [True] * n, "": [1] * n}),
        "wide": pa.table(wide),
        "empty": pa.table({"embedding": pa.array([], type=pa.list_(pa.float32())),
                           "label": pa.array([], type=pa.string())}),
        "pandas-like": pa.table({"__index_level_0__": range(n), "label": list("abcde")}),
    }


@pytest.mark.parametrize("name", list(_tables()))
@pytest.mark.parametrize("options", [
    {}, {"version": "1.0", "compression": "none", "write_statistics": False},
    {"row_group_size": 2, "data_page_version": "2.0", "compression": "zstd"},
    {"store_schema": False, "use_dictionary": False}])
def test_footer_names_are_pyarrow_s(tmp_path, name, options):
    path = tmp_path / "t.parquet"
    pq.write_table(_tables()[name], path, **options)
    assert column_names(str(path)) == pq.read_schema(path).names


def test_footer_of_what_is_not_plain_parquet_is_none(tmp_path):
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"a": [1, 2]}), good)
    data = good.read_bytes()
    cases = {
        "text.parquet": b"not parquet at all",
        "short.parquet": b"PAR1",
        "truncated.parquet": data[: len(data) // 2],
        "no-tail.parquet": data[:-1],
        "encrypted.parquet": data[:-4] + b"PARE",
        "length-too-big.parquet": data[:-8] + (len(data) * 2).to_bytes(4, "little") + b"PAR1",
        # the footer's bytes cut short: a length that points into the data pages
        "footer-cut.parquet": data[:-8] + (8).to_bytes(4, "little") + b"PAR1",
    }
    for file, content in cases.items():
        (tmp_path / file).write_bytes(content)
        assert column_names(str(tmp_path / file)) is None, file
    assert column_names(str(tmp_path / "missing.parquet")) is None


# ---------------------------------------------------------------- check_columns


def _read_error(path, **options) -> str:
    with pytest.raises(InputError) as info:
        read_dataset(path, ReadOptions(**options))
    return str(info.value)


@pytest.mark.parametrize("options", [
    {"label_column": "nope"}, {"group_column": "g"}, {"query_column": "q"},
    {"gallery_column": "gal"}, {"embedding_column": "vec"},
    {"embedding_columns": "dim_*"}, {"label_column": "is_query", "embedding_column": "e"},
])
def test_check_columns_raises_the_reader_s_message(tmp_path, options):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"embedding": [[0.0, 1.0], [1.0, 0.0]], "label": ["a", "b"],
                             "is_query": [True, True]}), path)
    with pytest.raises(InputError) as info:
        check_columns(path, ReadOptions(**options))
    assert str(info.value) == _read_error(path, **options)


def test_check_columns_of_a_folder_reads_its_first_file(tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    for i, label in enumerate(["label", "other"]):  # the reader decides from the first file
        pq.write_table(pa.table({"embedding": [[0.0, 1.0]], label: ["a"]}),
                       folder / f"part-{i}.parquet")
    check_columns(folder, ReadOptions())
    with pytest.raises(InputError) as info:
        check_columns(folder, ReadOptions(label_column="other"))
    assert str(info.value) == _read_error(folder, label_column="other")


def test_check_columns_leaves_the_rest_to_the_reader(tmp_path):
    # present but mistyped columns, a labels file, another format: nothing to say here
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"embedding": ["x", "y"], "label": [[1], [2]]}), path)
    check_columns(path, ReadOptions())
    assert "column 'label' has type" in _read_error(path)
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\n")
    check_columns(path, ReadOptions(labels=labels, label_column="anything"))
    npy = tmp_path / "e.npy"
    np.save(npy, np.zeros((2, 2), np.float32))
    check_columns(npy, ReadOptions(labels=labels, label_column="nope"))
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet")
    check_columns(bad, ReadOptions(label_column="nope"))  # the reader says "not a Parquet file"


def test_a_missing_column_comes_before_a_mistyped_one(tmp_path):
    # names first, then types, in the reader as in the check (so the two agree)
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"vectors": [[0.0, 1.0]], "label": [[1]]}), path)
    msg = _read_error(path)
    assert msg.startswith(f"{path}: no column 'embedding'; columns are: vectors, label")
    with pytest.raises(InputError) as info:
        check_columns(path, ReadOptions())
    assert str(info.value) == msg


# ---------------------------------------------------------------- Arrow -> NumPy


def _random_array(rng: np.random.Generator, kind: str, n: int) -> pa.Array:
    if kind == "bool":
        return pa.array(rng.random(n) < 0.5)
    if kind in ("int8", "uint16", "int32", "int64", "uint64"):
        info = np.iinfo(kind)
        values = rng.integers(max(info.min, -(2**40)), min(info.max, 2**40), size=n,
                              dtype=np.int64, endpoint=True)
        return pa.array(values.astype(kind))
    if kind in ("float16", "float32", "float64"):
        values = rng.normal(size=n).astype(kind)
        values[rng.random(n) < 0.2] = 0.0  # ties
        return pa.array(values)
    alphabet = ["", "a", "b", "ab", "é", "日本", "\t", "0", "NaN", "a\x00b"]
    values = ["".join(rng.choice(alphabet, size=rng.integers(0, 4))) for _ in range(n)]
    if kind == "ascii":
        values = [v.encode("ascii", "ignore").decode() for v in values]
    return pa.array(values, type=pa.large_string() if kind == "large_string" else pa.string())


NUMERIC_KINDS = ["bool", "int8", "uint16", "int32", "int64", "uint64", "float16", "float32",
                 "float64"]
TEXT_KINDS = ["ascii", "string", "large_string"]


@pytest.mark.parametrize("kind", NUMERIC_KINDS)
def test_values_to_numpy_is_to_pylist(kind):
    rng = np.random.default_rng(11)
    for n in (0, 1, 7, 8, 9, 100):
        arr = _random_array(rng, kind, n)
        for start in {0, 1, 3, n // 2}:  # slices: an offset into the buffers
            part = arr.slice(min(start, n), n)
            got = values_to_numpy(part)
            expected = part.to_pylist()
            assert got.shape == (len(expected),)
            if kind == "bool":
                assert got.dtype == np.bool_
            else:
                assert got.dtype == np.dtype(kind)
            assert got.tolist() == expected


@pytest.mark.parametrize("kind", TEXT_KINDS + ["int64", "dictionary"])
def test_strings_from_arrow_is_str_of_to_pylist(kind):
    rng = np.random.default_rng(5)
    for n in (0, 1, 9, 60):
        if kind == "dictionary":
            arr = _random_array(rng, "string", n).dictionary_encode()
        else:
            arr = _random_array(rng, kind, n)
        parts = [arr.slice(0, n // 3), arr.slice(n // 3, n // 3), arr.slice(2 * (n // 3))]
        col = pa.chunked_array(parts, type=arr.type)
        got = strings_from_arrow(col, "f", "c", 0)
        expected = [str(v) for v in arr.to_pylist()]
        assert got.dtype == object and list(got) == expected
        assert all(type(v) is str for v in got)


def test_a_null_is_named_by_its_row_in_a_sliced_chunk():
    arr = pa.array(["a", "b", None, "c", None])
    col = pa.chunked_array([arr.slice(0, 1), arr.slice(1, 4)])
    with pytest.raises(InputError, match=r"column 'c' row 12 is null"):
        strings_from_arrow(col, "f", "c", 10)


# ---------------------------------------------------------------- the option parser


def _values(param) -> list:
    """Values a parameter can be given: None, its default, strings from a command line."""
    import enum

    ann = param.type_descriptor.annotation
    out = [None, param.default]
    if param.multiple or param.nargs == -1:
        return out + [(), ("opis=0.02",), ["a", "b"], ("",)]
    if ann is Path:
        return out + ["no-such.parquet", SAMPLE, "sample_data", "-", "", ".", "a/../b"]
    if isinstance(ann, type) and issubclass(ann, enum.Enum):
        return out + [next(iter(ann)), next(iter(ann)).value, "nope", ""]
    if ann in (int, float):
        return out + [3, 0.5, True, "3", "0.5", "x", ""]
    if ann is bool:
        return out + [True, False, "true", "0", 1]
    return out + ["x", "", "-", "0.1:0.5", 3]


def _outcome(coerce, value, param, ctx):
    import typer

    try:
        out = coerce(value, param=param, ctx=ctx)
    except typer.BadParameter as e:
        return ("error", e.format_message())
    return (type(out), out)


def test_the_fast_coercion_is_typer_s_for_every_parameter(monkeypatch):
    import importlib.util

    import typer

    from opis_cli.cli import app  # noqa: F401  (registers the commands)
    from opis_cli.cli.root import _UNSET, _Coercion, build_command

    monkeypatch.chdir(REPO)
    root = build_command()
    if importlib.util.find_spec("typer._coercion") is None:  # typer 0.28: click's types
        params = [p for c in [root, *root.commands.values()] for p in c.params]
        assert not any(isinstance(getattr(p, "_runtime_param", None), _Coercion)
                       for p in params)
        return
    import typer._coercion as typer_coercion  # typer >= 0.29: pydantic adapters

    checked = fast = 0
    for name, cmd in [("opis", root), *root.commands.items()]:
        ctx = typer.Context(cmd, info_name=name)
        for param in cmd.params:
            runtime = param.get_runtime_param()
            assert isinstance(runtime, _Coercion), (name, param.name)
            full = typer_coercion.build_runtime_param(param.type_descriptor)
            for value in _values(param):
                got = _outcome(runtime.coerce, value, param, ctx)
                assert got == _outcome(full.coerce, value, param, ctx), (name, param.name, value)
                checked += 1
                fast += runtime._fast(value) is not _UNSET
    assert checked > 500 and fast > checked // 3  # the fast path does serve
