"""The early memory check of ``read_dataset``: estimate, compare, fail before reading.

The estimate's terms are checked against the formula written in
``memory_needed``'s docstring (worked by hand below); whether the formula
matches real peaks is measured by ``benchmarks/bench_scale.py``, which prints
both.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from opis_cli.cli import main
from opis_cli.engines.base import tile_rows
from opis_cli.errors import InputError
from opis_cli import memory
from opis_cli.memory import available_memory, check_memory, memory_needed
from opis_cli.io import read_dataset

MiB = 2**20


def test_terms_follow_the_documented_formula():
    t = memory_needed(1000, 10, stored_itemsize=2, parquet=True, queries=600, gallery=800,
                      groups=True, block_bytes=3 * 4 * 800, threads=3)
    assert t["stored"] == 1000 * 10 * 2
    assert t["reading"] == 1000 * 10 * 2
    assert t["labels"] == 1000 * 72 * 2
    assert t["rows"] == 1000 * 200
    assert t["float32"] == (600 + 800) * 10 * 4
    # a block of 3 query rows holds less than one tile: one worker, one tile;
    # the working copy (40 kB) is smaller than tile + pilot + the worker's keys
    tile = tile_rows(800)
    assert tile >= 3
    assert t["working"] == tile * 800 * 4 + 64 * MiB + 3 * 800 * 8
    # a block of two tiles: two of the three threads work at once
    t2 = memory_needed(5000, 10, queries=5000, gallery=800, block_bytes=2 * tile * 800 * 4,
                       threads=3)
    assert 5000 > 2 * tile
    assert t2["working"] == 2 * (tile * 800 * 4 + 3 * 800 * 8) + 64 * MiB
    assert t["base"] == 400 * MiB
    assert t["total"] == sum(v for k, v in t.items() if k != "total")


def test_working_copy_dominates_for_wide_embeddings():
    t = memory_needed(10_000, 4096, block_bytes=MiB, threads=2)
    assert t["working"] == 10_000 * 4096 * 4
    assert t["float32"] == 2 * 10_000 * 4096 * 4  # every row is query and gallery
    assert t["reading"] == 0  # not Parquet


def test_memory_mapped_input_costs_nothing_as_stored():
    assert memory_needed(500, 8, stored_itemsize=0)["stored"] == 0


def test_check_passes_at_the_estimate_and_fails_one_byte_below():
    need = memory_needed(50_000, 256, threads=2)["total"]
    check_memory("x.parquet", 50_000, 256, available=need, threads=2)
    with pytest.raises(InputError) as e:
        check_memory("x.parquet", 50_000, 256, available=need - 1, threads=2)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("x.parquet: 50000 x 256 embeddings need about ")
    assert f"{need / 2**30:.1f} GiB" in msg
    assert f"but {(need - 1) / 2**30:.1f} GiB is available" in msg


def _parquet(path, n=300, d=6, groups=3, fixed=True):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d)).astype(np.float32)
    flat = pa.array(x.ravel())
    emb = pa.FixedSizeListArray.from_arrays(flat, d) if fixed else \
        pa.ListArray.from_arrays(pa.array(np.arange(0, n * d + 1, d, dtype=np.int32)), flat)
    table = pa.table({"embedding": emb, "label": rng.integers(0, 5, n)})
    pq.write_table(table, path, row_group_size=n // groups)
    return path


@pytest.mark.parametrize("fixed", [True, False])
def test_parquet_fails_before_reading_rows(tmp_path, fixed):
    path = str(_parquet(tmp_path / "e.parquet", fixed=fixed))
    calls = []
    with pytest.raises(InputError, match=r"e\.parquet: 300 x 6 embeddings need about"):
        read_dataset(path, memory_available=1000, progress=lambda d, t: calls.append(d))
    assert calls == []  # not one row group was delivered


def test_parquet_reads_when_it_fits_or_check_is_off(tmp_path):
    path = str(_parquet(tmp_path / "e.parquet"))
    big = memory_needed(300, 6, parquet=True)["total"]
    assert read_dataset(path, memory_available=big).n_samples == 300
    assert read_dataset(path, memory_available=1, check_memory_fits=False).n_samples == 300


def test_numpy_inputs_are_checked(tmp_path):
    x = np.zeros((40, 3), np.float32)
    npy, npz = tmp_path / "e.npy", tmp_path / "e.npz"
    np.save(npy, x)
    np.savez(npz, embeddings=x, labels=np.arange(40) % 2)
    with pytest.raises(InputError, match=r"e\.npy: 40 x 3 embeddings need about"):
        read_dataset(str(npy), labels_path=None, memory_available=1)
    with pytest.raises(InputError, match=r"e\.npz: 40 x 3 embeddings need about"):
        read_dataset(str(npz), memory_available=1)


def test_available_memory_is_known_here():
    avail = available_memory()
    assert isinstance(avail, int) and 0 < avail
    with open("/proc/meminfo") as fh:
        total = int(next(line for line in fh if line.startswith("MemTotal:")).split()[1]) * 1024
    assert avail <= total


def test_cli_reports_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    path = str(_parquet(tmp_path / "big.parquet"))
    monkeypatch.setattr(memory, "available_memory", lambda: 10 * MiB)
    out = tmp_path / "r.json"
    assert main(["evaluate", path, "--json", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"Error: {path}: 300 x 6 embeddings need about")
    assert "0.0 GiB is available" in err and err.count("\n") == 1
    assert not os.path.exists(out)


# ---------------------------------------------------------------- owned arrays, handed over
# The CLI reads the embeddings into one writeable array of their own and hands
# it over to opis_cli.evaluate(copy=False): the rows are held once. Each reader
# is compared with a naive read (the whole file at once, row by row), and the
# CLI's JSON with the copying path.


def _owned(arr) -> bool:
    """A writeable, C-contiguous float32 ndarray whose memory is NumPy's own
    (not a file map or an Arrow buffer): what prepare() may consume."""
    root = arr
    while isinstance(root, np.ndarray) and root.base is not None:
        root = root.base
    return (type(arr) is np.ndarray and arr.dtype == np.float32 and arr.flags.c_contiguous
            and arr.flags.writeable and type(root) is np.ndarray and root.flags.owndata)


def _naive_parquet_rows(path) -> np.ndarray:
    """Every row's embedding by Python lists: the naive reading of the file."""
    rows = pq.read_table(path).column("embedding").to_pylist()
    return np.array(rows, dtype=np.float64)


def test_npy_owned_is_read_into_its_own_array(tmp_path):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((257, 7)).astype(np.float32)
    np.save(tmp_path / "e.npy", x)
    np.save(tmp_path / "l.npy", np.arange(257) % 4)
    mapped = read_dataset(tmp_path / "e.npy", labels_path=tmp_path / "l.npy")
    assert isinstance(mapped.embeddings, np.memmap)  # the default stays a read-only map
    ds = read_dataset(tmp_path / "e.npy", labels_path=tmp_path / "l.npy", owned=True)
    assert _owned(ds.embeddings)
    assert ds.embeddings.tobytes() == x.tobytes()
    ds.embeddings[:] = 0  # writing into it never reaches the file
    np.testing.assert_array_equal(np.load(tmp_path / "e.npy"), x)


@pytest.mark.parametrize("kind", ["float64", "float16", "fortran", "big-endian"])
def test_npy_owned_other_layouts_stay_mapped(tmp_path, kind):
    """Only native float32 in C order is read into a buffer; the others stay
    mapped (prepare() makes the one float32 copy) and read the same values."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((40, 5))
    arr = {"float64": x, "float16": x.astype(np.float16),
           "fortran": np.asfortranarray(x.astype(np.float32)),
           "big-endian": x.astype(">f4")}[kind]
    np.save(tmp_path / "e.npy", arr)
    np.save(tmp_path / "l.npy", np.arange(40) % 3)
    ds = read_dataset(tmp_path / "e.npy", labels_path=tmp_path / "l.npy", owned=True)
    assert isinstance(ds.embeddings, np.memmap)
    np.testing.assert_array_equal(np.asarray(ds.embeddings, dtype=np.float64),
                                  np.asarray(arr, dtype=np.float64))


def test_npy_owned_integers_become_float32(tmp_path):
    np.save(tmp_path / "e.npy", np.arange(24, dtype=np.int16).reshape(6, 4))
    np.save(tmp_path / "l.npy", np.arange(6) % 2)
    ds = read_dataset(tmp_path / "e.npy", labels_path=tmp_path / "l.npy", owned=True)
    assert _owned(ds.embeddings)
    np.testing.assert_array_equal(ds.embeddings, np.arange(24).reshape(6, 4))


def test_npy_owned_truncated_file_is_one_line(tmp_path):
    x = np.ones((100, 8), np.float32)
    np.save(tmp_path / "e.npy", x)
    raw = (tmp_path / "e.npy").read_bytes()
    (tmp_path / "e.npy").write_bytes(raw[:-40])
    np.save(tmp_path / "l.npy", np.arange(100) % 2)
    with pytest.raises(InputError) as e:
        read_dataset(tmp_path / "e.npy", labels_path=tmp_path / "l.npy", owned=True)
    assert str(e.value).startswith(f"{tmp_path / 'e.npy'}: ") and "\n" not in str(e.value)


def test_owned_memory_check_counts_the_array_as_the_float32_rows(tmp_path):
    """Handed over, the array read is the run's float32 rows: the check
    passes at the estimate without a stored copy and fails one byte below."""
    np.save(tmp_path / "e.npy", np.zeros((40, 3), np.float32))
    np.save(tmp_path / "l.npy", np.arange(40) % 2)
    need = memory_needed(40, 3, stored_itemsize=0)["total"]
    assert need < memory_needed(40, 3, stored_itemsize=4)["total"]
    ds = read_dataset(tmp_path / "e.npy", labels_path=tmp_path / "l.npy", owned=True,
                      memory_available=need)
    assert _owned(ds.embeddings)
    with pytest.raises(InputError, match="need about"):
        read_dataset(tmp_path / "e.npy", labels_path=tmp_path / "l.npy", owned=True,
                     memory_available=need - 1)


@pytest.mark.parametrize("fixed", [True, False])
def test_parquet_one_big_row_group_is_read_in_batches(tmp_path, monkeypatch, fixed):
    """A row group larger than a batch is decoded a batch at a time into the
    one matrix; the values equal a naive read, the array is owned."""
    from opis_cli.io import parquet as parquet_reader

    path = _parquet(tmp_path / "e.parquet", n=5000, d=6, groups=1, fixed=fixed)
    assert pq.ParquetFile(path).num_row_groups == 1
    monkeypatch.setattr(parquet_reader, "BATCH_BYTES", 1024 * 6 * 4)  # 1,024 rows
    monkeypatch.setattr(parquet_reader, "_BATCH_ROWS_UNKNOWN_DIM", 1024)
    seen = []
    ds = read_dataset(path, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(min(5000, 1024 * (i + 1)), 5000) for i in range(5)]
    assert _owned(ds.embeddings)
    np.testing.assert_array_equal(ds.embeddings.astype(np.float64), _naive_parquet_rows(path))
    labels = pq.read_table(path).column("label").to_pylist()
    assert list(ds.labels) == [str(v) for v in labels]


@pytest.mark.parametrize("kind", ["int", "str", "dict"])
def test_parquet_labels_share_one_object_per_value(tmp_path, monkeypatch, kind):
    """The labels and groups read from Parquet are the values a naive read
    gives (``str`` of each, row by row), and equal values are one ``str``
    object across row groups and batches (a label is stored once, not once
    per row; docs/performance.md)."""
    from opis_cli.io import parquet as parquet_reader

    rng = np.random.default_rng(5)
    n, d = 3000, 4
    y = rng.integers(0, 40, n)
    g = rng.integers(0, 3, n)
    lab = {"int": pa.array(y), "str": pa.array([f"c{v}é" for v in y]),
           "dict": pa.array([f"c{v}" for v in y]).dictionary_encode()}[kind]
    x = rng.standard_normal((n, d)).astype(np.float32)
    table = pa.table({"embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), d),
                      "label": lab, "group": pa.array(["ab"[v] + "x" for v in g % 2])})
    pq.write_table(table, tmp_path / "e.parquet", row_group_size=700)
    monkeypatch.setattr(parquet_reader, "BATCH_BYTES", 1024 * d * 4)  # 1,024 rows
    ds = read_dataset(tmp_path / "e.parquet", group_column="group")
    naive = pq.read_table(tmp_path / "e.parquet")
    want = [str(v) for v in naive.column("label").to_pylist()]
    assert ds.labels.dtype == object and list(ds.labels) == want
    assert all(type(v) is str for v in ds.labels)
    assert len({id(v) for v in ds.labels}) == len(set(want)) == 40
    assert list(ds.groups) == naive.column("group").to_pylist()
    assert len({id(v) for v in ds.groups}) == 2


def _one_object_per_value(values) -> bool:
    return len({id(v) for v in values}) == len(set(values))


def _label_inputs(rng, n: int):
    """Labels of ``n`` rows over 40 classes (multi-character strings: CPython
    shares one-character strings by itself), as each label array kind."""
    y = rng.integers(10, 50, n)
    words = np.array([f"cl\u00e9ss-{v}" for v in y])
    return {"int": y.astype(np.int64), "uint8": y.astype(np.uint8), "str": words,
            "bytes": np.char.encode(words, "utf-8"), "float": y.astype(np.float64) + 0.5,
            "bool": y % 2 == 0}


def _naive_strings(arr: np.ndarray) -> list:
    """SPEC 1: labels are compared as strings; ``str`` of each value, bytes decoded."""
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in arr.tolist()]


@pytest.mark.parametrize("kind", ["int", "uint8", "str", "bytes", "float", "bool"])
def test_strings_from_numpy_one_object_per_value(monkeypatch, kind):
    """The values are ``str`` of each input row (a naive conversion), and equal
    values are one object across the conversion's chunks of rows."""
    from opis_cli.io import _columns

    monkeypatch.setattr(_columns, "STRING_CHUNK_ROWS", 100)  # 30 chunks
    arr = _label_inputs(np.random.default_rng(11), 3000)[kind]
    got = _columns.strings_from_numpy(arr, "x.npy", "labels")
    want = _naive_strings(arr)
    assert got.dtype == object and got.shape == (3000,) and list(got) == want
    assert all(type(v) is str for v in got)
    assert _one_object_per_value(list(got))
    assert len(set(want)) == (2 if kind == "bool" else 40)


def test_shared_strings_by_hand_and_over_object_arrays():
    from opis_cli.io._columns import shared_strings

    a1, a2 = "".join(["ab", "c"]), "".join(["a", "bc"])  # equal, two objects
    assert a1 == a2 and a1 is not a2
    out = shared_strings(np.array([a1, "zz", a2, "zz", "y"], dtype=object))
    assert out.dtype == object and list(out) == ["abc", "zz", "abc", "zz", "y"]
    assert out[0] is a1 and out[2] is a1 and out[1] is out[3]
    memo: dict = {}
    first = shared_strings([a2], memo)
    assert shared_strings([a1, a1], memo)[1] is first[0] is a2  # the memo spans calls
    assert shared_strings([]).shape == (0,)
    rng = np.random.default_rng(3)
    objs = np.array([str(v) + "-x" for v in rng.integers(0, 30, 500)], dtype=object)
    got = shared_strings(objs)
    assert list(got) == [str(v) for v in objs] and _one_object_per_value(list(got))


@pytest.mark.parametrize("fmt", ["npy-int", "npy-str", "txt", "csv", "parquet", "npz"])
def test_label_files_share_one_object_per_value(tmp_path, fmt):
    """Labels (and .npz groups) from every label source: the values a naive read
    gives, equal values one ``str`` object (as for Parquet input)."""
    rng = np.random.default_rng(7)
    n = 2500
    lab = _label_inputs(rng, n)
    x = rng.standard_normal((n, 3)).astype(np.float32)
    np.save(tmp_path / "e.npy", x)
    groups = None
    if fmt == "npz":
        g = np.array(["north", "south", "east"])[rng.integers(0, 3, n)]
        np.savez(tmp_path / "e.npz", embeddings=x, labels=lab["int"], region=g)
        ds = read_dataset(tmp_path / "e.npz", group_column="region")
        want, groups = _naive_strings(lab["int"]), list(g)
    else:
        if fmt == "npy-int":
            np.save(tmp_path / "l.npy", lab["int"])
            want, path = _naive_strings(lab["int"]), tmp_path / "l.npy"
        elif fmt == "npy-str":
            np.save(tmp_path / "l.npy", lab["str"])
            want, path = list(lab["str"]), tmp_path / "l.npy"
        elif fmt == "txt":
            want, path = list(lab["str"]), tmp_path / "l.txt"
            path.write_text("".join(f"{v}\r\n" if i % 2 else f"{v}\n"
                                    for i, v in enumerate(want)), encoding="utf-8")
        elif fmt == "csv":
            want, path = list(lab["str"]), tmp_path / "l.csv"
            path.write_text("label\n" + "".join(f"{v}\n" for v in want), encoding="utf-8")
        else:
            want, path = _naive_strings(lab["int"]), tmp_path / "l.parquet"
            pq.write_table(pa.table({"label": lab["int"]}), path, row_group_size=600)
        ds = read_dataset(tmp_path / "e.npy", labels_path=path)
    assert list(ds.labels) == want and all(type(v) is str for v in ds.labels)
    assert _one_object_per_value(list(ds.labels)) and len(set(want)) == 40
    if groups is not None:
        assert list(ds.groups) == groups and _one_object_per_value(list(ds.groups))


def _naive_txt_labels(text: str):
    """A .txt labels file as documented: lines split on \\n, one \\r ending
    stripped, trailing empty lines dropped; another empty line: its 1-based number."""
    lines = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
    while lines and lines[-1] == "":
        lines.pop()
    empty = [i for i, line in enumerate(lines) if line == ""]
    return ("empty", empty[0] + 1) if empty else ("labels", lines)


@pytest.mark.parametrize("seed", range(12))
def test_txt_labels_read_in_blocks_equal_a_naive_split(tmp_path, monkeypatch, seed):
    """Blocks of a few characters cut the file anywhere: the labels (one object
    per value) or the empty line reported are those of a naive whole-file split."""
    from opis_cli.errors import InputError
    from opis_cli.io import labels as labels_reader

    rng = np.random.default_rng(seed)
    monkeypatch.setattr(labels_reader, "TXT_BLOCK_CHARS", int(rng.integers(1, 9)))
    words = ["ab", "ab", "c\u00e9d", "x y", "\r", "q\rr", ""]
    n = int(rng.integers(0, 60))
    ends = rng.choice(["\n", "\r\n"], n)
    picks = rng.choice(len(words), n, p=[.3, .2, .2, .1, .04, .04, .12] if seed % 2 else
                       [.35, .25, .2, .1, .05, .05, 0])
    text = "".join(words[k] + e for k, e in zip(picks, ends)) + ("\n\r\n" if seed % 3 else "")
    path = tmp_path / "l.txt"
    path.write_bytes(text.encode("utf-8"))
    kind, want = _naive_txt_labels(text)
    if kind == "empty":
        with pytest.raises(InputError, match=f"line {want} is empty; expected one label"):
            labels_reader.read_labels(str(path), "label")
        return
    got = labels_reader.read_labels(str(path), "label")
    assert got.dtype == object and list(got) == want and _one_object_per_value(list(got))


def test_parquet_batches_keep_the_file_row_in_messages(tmp_path, monkeypatch):
    """A null in the third batch of the second row group names its row in the file."""
    from opis_cli.io import parquet as parquet_reader

    n, d = 3000, 4
    rows = [[float(i + j) for j in range(d)] for i in range(n)]
    rows[2345] = None
    table = pa.table({"embedding": pa.array(rows, type=pa.list_(pa.float32())),
                      "label": pa.array([str(i % 7) for i in range(n)])})
    path = tmp_path / "nulls.parquet"
    pq.write_table(table, path, row_group_size=1500)
    monkeypatch.setattr(parquet_reader, "_BATCH_ROWS_UNKNOWN_DIM", 400)
    with pytest.raises(InputError) as e:
        read_dataset(path)
    assert str(e.value) == (f"{path}: column 'embedding' row 2345 is null; "
                            "expected a list of numbers")


def _flagged_dataset(seed: int, n: int = 900, d: int = 10):
    """Clustered rows with ties and exact duplicates, a singleton class,
    groups and a query/gallery split."""
    rng = np.random.default_rng(seed)
    classes = 30
    y = rng.integers(0, classes, n)
    x = (rng.integers(-4, 5, (classes, d))[y] + rng.integers(-2, 3, (n, d))).astype(np.float32)
    x[11] = x[12]  # an exact duplicate
    lab = y.astype(str).astype(object)
    lab[5] = "singleton"
    part = rng.integers(0, 4, n)
    groups = np.array(["g1", "g2", "g<3>"], dtype=object)[rng.integers(0, 3, n)]
    return x, lab, groups, part != 1, part != 0


def _json_doc(path) -> dict:
    import json

    doc = json.loads(path.read_text())
    doc["provenance"].pop("time")
    return doc


@pytest.mark.parametrize("fmt", ["parquet", "npy"])
@pytest.mark.parametrize("opts", [["--metric", "cosine"], ["--metric", "l2"],
                                  ["--metric", "l2", "--engine", "sampled"]],
                         ids=["cosine", "l2", "sampled"])
def test_cli_hands_the_array_over_and_the_json_is_the_same(tmp_path, monkeypatch, capsys,
                                                           fmt, opts):
    """The CLI gives prepare() an owned array to consume; the JSON is byte
    for byte that of the copying path (opis_cli.evaluate with copy=True)."""
    import opis_cli.api as api

    x, y, g, q, gal = _flagged_dataset(seed=21)
    if fmt == "parquet":
        path = tmp_path / "e.parquet"
        pq.write_table(pa.table({
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), x.shape[1]),
            "label": pa.array(y.astype(str)), "group": pa.array(g.astype(str)),
            "is_query": pa.array(q), "is_gallery": pa.array(gal)}), path, row_group_size=200)
        args = [str(path), "--group-column", "group"]
    else:
        path = tmp_path / "e.npy"
        np.save(path, x)
        np.save(tmp_path / "l.npy", y.astype(str))
        args = [str(path), "--labels", str(tmp_path / "l.npy")]

    consumed = []
    real_prepare = api.prepare

    def spy(emb, *a, consume=False, **kw):
        consumed.append(consume and _owned(emb))
        return real_prepare(emb, *a, consume=consume, **kw)

    monkeypatch.setattr(api, "prepare", spy)
    handed = tmp_path / "handed.json"
    assert main(["evaluate", *args, *opts, "-q", "--json", str(handed)]) == 0, \
        capsys.readouterr().err
    assert consumed == [True]

    real_evaluate = api.evaluate

    def copying(*a, **kw):
        kw["copy"] = True
        return real_evaluate(*a, **kw)

    monkeypatch.setattr(api, "evaluate", copying)
    copied = tmp_path / "copied.json"
    assert main(["evaluate", *args, *opts, "-q", "--json", str(copied)]) == 0
    assert consumed == [True, False]
    assert _json_doc(handed) == _json_doc(copied)
    # and the same bytes apart from the provenance's time
    a, b = handed.read_text().splitlines(), copied.read_text().splitlines()
    assert len(a) == len(b)
    assert all(u.strip().startswith('"time": ') for u, v in zip(a, b) if u != v)
