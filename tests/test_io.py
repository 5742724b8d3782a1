"""Tests for opis_cli.io: every input format and every input error."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from packaging.version import Version

from opis_cli.errors import InputError
from opis_cli.io import Dataset, SourceFile, read_dataset
from opis_cli.io._columns import Columns, ColumnSpec
from opis_cli.io.formats import FORMATS as _FORMATS

EMB = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
LABELS = ["a", "b", "a", "c"]


def list_array(
    rows: np.ndarray, kind: str = "list", value_type: pa.DataType | None = None
) -> pa.Array:
    flat = pa.array(rows.reshape(-1), type=value_type or pa.float32())
    n, d = rows.shape
    if kind == "fixed":
        return pa.FixedSizeListArray.from_arrays(flat, d)
    offsets = np.arange(0, n * d + 1, d, dtype=np.int64 if kind == "large" else np.int32)
    cls = pa.LargeListArray if kind == "large" else pa.ListArray
    return cls.from_arrays(pa.array(offsets), flat)


def write_parquet(path, columns: dict, **kwargs) -> str:
    pq.write_table(pa.table(columns), str(path), **kwargs)
    return str(path)


def basic_parquet(path, emb=EMB, labels=LABELS, kind="list", row_group_size=None, **extra) -> str:
    columns = {"embedding": list_array(emb, kind), "label": labels, **extra}
    return write_parquet(path, columns, row_group_size=row_group_size)


def error_of(*args, **kwargs) -> str:
    with pytest.raises(InputError) as info:
        read_dataset(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


# ---------------------------------------------------------------- Parquet


@pytest.mark.parametrize("kind", ["list", "large", "fixed"])
def test_parquet_list_kinds(tmp_path, kind):
    path = basic_parquet(tmp_path / "d.parquet", kind=kind)
    ds = read_dataset(path)
    assert isinstance(ds, Dataset)
    np.testing.assert_array_equal(ds.embeddings, EMB)
    assert ds.embeddings.dtype == np.float32
    assert ds.labels.dtype == object
    assert list(ds.labels) == LABELS
    assert all(type(v) is str for v in ds.labels)
    assert ds.groups is None and ds.is_query is None and ds.is_gallery is None
    assert ds.n_samples == 4 and ds.dim == 3


@pytest.mark.parametrize("kind", ["list", "fixed"])
@pytest.mark.parametrize(
    "value_type, dtype",
    [(pa.float16(), np.float16), (pa.float32(), np.float32), (pa.float64(), np.float64)],
)
def test_parquet_float_dtype_preserved(tmp_path, kind, value_type, dtype):
    path = write_parquet(
        tmp_path / "d.parquet",
        {"embedding": list_array(EMB.astype(dtype), kind, value_type), "label": LABELS},
    )
    ds = read_dataset(path)
    assert ds.embeddings.dtype == dtype
    np.testing.assert_array_equal(ds.embeddings, EMB.astype(dtype))


def test_parquet_integer_values_become_float32(tmp_path):
    ints = np.arange(12, dtype=np.int64).reshape(4, 3)
    path = write_parquet(
        tmp_path / "d.parquet", {"embedding": list_array(ints, "list", pa.int64()), "label": LABELS}
    )
    ds = read_dataset(path)
    assert ds.embeddings.dtype == np.float32
    np.testing.assert_array_equal(ds.embeddings, ints)


def test_parquet_row_groups_and_progress(tmp_path):
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(25, 5)).astype(np.float32)
    labels = [f"c{i % 3}" for i in range(25)]
    path = basic_parquet(tmp_path / "d.parquet", emb=emb, labels=labels, row_group_size=7)
    calls = []
    ds = read_dataset(path, progress=lambda done, total: calls.append((done, total)))
    np.testing.assert_array_equal(ds.embeddings, emb)
    assert list(ds.labels) == labels
    assert calls == [(7, 25), (14, 25), (21, 25), (25, 25)]


def test_parquet_sliced_chunks(tmp_path):
    # Several record batches per row group exercise the offset handling of sliced arrays.
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(10, 4))
    table = pa.table(
        {"embedding": list_array(emb, "list", pa.float64()), "label": [str(i) for i in range(10)]}
    )
    batches = table.to_batches(max_chunksize=3)
    pq.write_table(pa.Table.from_batches(batches), tmp_path / "d.parquet")
    ds = read_dataset(tmp_path / "d.parquet")
    np.testing.assert_array_equal(ds.embeddings, emb)


def test_parquet_custom_columns(tmp_path):
    path = write_parquet(
        tmp_path / "d.parquet",
        {
            "vec": list_array(EMB),
            "cls": [10, 20, 10, 30],
            "customer": ["x", "y", "x", "y"],
            "q": [True, True, False, False],
            "g": [0, 1, 1, 1],
            "id": [1, 2, 3, 4],
        },
    )
    ds = read_dataset(
        path,
        embedding_column="vec",
        label_column="cls",
        group_column="customer",
        query_column="q",
        gallery_column="g",
    )
    np.testing.assert_array_equal(ds.embeddings, EMB)
    assert list(ds.labels) == ["10", "20", "10", "30"]
    assert list(ds.groups) == ["x", "y", "x", "y"]
    assert ds.is_query.dtype == bool and list(ds.is_query) == [True, True, False, False]
    assert ds.is_gallery.dtype == bool and list(ds.is_gallery) == [False, True, True, True]


def test_parquet_auto_detects_query_gallery(tmp_path):
    path = basic_parquet(
        tmp_path / "d.parquet", is_query=[True, False, True, False], is_gallery=[1, 1, 0, 1]
    )
    ds = read_dataset(path)
    assert list(ds.is_query) == [True, False, True, False]
    assert list(ds.is_gallery) == [True, True, False, True]


def test_parquet_group_only_when_asked(tmp_path):
    path = basic_parquet(tmp_path / "d.parquet", group=["g1", "g2", "g1", "g2"])
    assert read_dataset(path).groups is None
    assert list(read_dataset(path, group_column="group").groups) == ["g1", "g2", "g1", "g2"]


def test_parquet_label_types_to_str(tmp_path):
    dict_labels = pa.array(["x", "y", "x", "z"]).dictionary_encode()
    path = write_parquet(
        tmp_path / "d.parquet", {"embedding": list_array(EMB), "label": dict_labels}
    )
    assert list(read_dataset(path).labels) == ["x", "y", "x", "z"]
    path = write_parquet(
        tmp_path / "f.parquet", {"embedding": list_array(EMB), "label": [1.0, 2.5, 1.0, 3.0]}
    )
    assert list(read_dataset(path).labels) == ["1.0", "2.5", "1.0", "3.0"]
    path = write_parquet(
        tmp_path / "b.parquet", {"embedding": list_array(EMB), "label": [True, False, True, True]}
    )
    assert list(read_dataset(path).labels) == ["True", "False", "True", "True"]


def test_parquet_multi_column_glob(tmp_path):
    path = write_parquet(
        tmp_path / "d.parquet",
        {
            "id": [1, 2, 3, 4],
            "emb_2": EMB[:, 0].astype(np.float64),
            "label": LABELS,
            "emb_0": EMB[:, 1].astype(np.float64),
            "emb_1": pa.array([1, 2, 3, 4], type=pa.int32()),
        },
    )
    ds = read_dataset(path, embedding_columns="emb_*")
    # File column order, not name order; int columns join the float ones.
    expected = np.column_stack([EMB[:, 0], EMB[:, 1], [1, 2, 3, 4]]).astype(np.float64)
    np.testing.assert_array_equal(ds.embeddings, expected)
    assert ds.embeddings.dtype == np.float64
    assert list(ds.labels) == LABELS


def test_parquet_multi_column_float32_and_skips_role_columns(tmp_path):
    cols = {f"f{j}": EMB[:, j] for j in range(3)}
    path = write_parquet(tmp_path / "d.parquet", {**cols, "flag": [1, 0, 1, 1], "label": LABELS})
    ds = read_dataset(path, embedding_columns="f*", query_column="flag")
    assert ds.embeddings.dtype == np.float32
    np.testing.assert_array_equal(ds.embeddings, EMB)
    assert list(ds.is_query) == [True, False, True, True]


def test_parquet_directory(tmp_path):
    d = tmp_path / "parts"
    d.mkdir()
    # Written out of name order to check that files are read sorted by name.
    basic_parquet(d / "part-1.parquet", emb=EMB[2:], labels=LABELS[2:])
    basic_parquet(d / "part-0.parquet", emb=EMB[:2], labels=LABELS[:2])
    (d / "_SUCCESS").write_text("")
    calls = []
    ds = read_dataset(d, progress=lambda a, b: calls.append((a, b)))
    np.testing.assert_array_equal(ds.embeddings, EMB)
    assert list(ds.labels) == LABELS
    assert [os.path.basename(s.path) for s in ds.sources] == ["part-0.parquet", "part-1.parquet"]
    assert calls[-1] == (4, 4)


def test_parquet_directory_mixed_dtypes_upcast(tmp_path):
    d = tmp_path / "parts"
    d.mkdir()
    write_parquet(
        d / "a.parquet",
        {"embedding": list_array(EMB[:2], "list", pa.float32()), "label": LABELS[:2]},
    )
    write_parquet(
        d / "b.parquet",
        {
            "embedding": list_array(EMB[2:].astype(np.float64), "list", pa.float64()),
            "label": LABELS[2:],
        },
    )
    ds = read_dataset(d)
    assert ds.embeddings.dtype == np.float64
    np.testing.assert_allclose(ds.embeddings, EMB)


def test_sources_sha256(tmp_path):
    path = basic_parquet(tmp_path / "d.parquet")
    ds = read_dataset(path)
    data = open(path, "rb").read()
    assert ds.sources == (
        SourceFile(path=path, sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data)),
    )


def test_dataset_is_frozen(tmp_path):
    ds = read_dataset(basic_parquet(tmp_path / "d.parquet"))
    with pytest.raises(AttributeError):
        ds.labels = None  # type: ignore[misc]


def test_parquet_labels_path_overrides(tmp_path):
    path = write_parquet(tmp_path / "d.parquet", {"embedding": list_array(EMB)})
    txt = tmp_path / "labels.txt"
    txt.write_text("p\nq\np\nr\n")
    ds = read_dataset(path, labels_path=txt)
    assert list(ds.labels) == ["p", "q", "p", "r"]
    assert len(ds.sources) == 2


# ---------------------------------------------------------------- NumPy


def test_npy_memory_mapped(tmp_path):
    np.save(tmp_path / "e.npy", EMB)
    np.save(tmp_path / "l.npy", np.array(LABELS))
    ds = read_dataset(tmp_path / "e.npy", labels_path=tmp_path / "l.npy")
    assert isinstance(ds.embeddings, np.memmap)
    assert not ds.embeddings.flags.writeable
    np.testing.assert_array_equal(ds.embeddings, EMB)
    assert list(ds.labels) == LABELS
    assert [os.path.basename(s.path) for s in ds.sources] == ["e.npy", "l.npy"]


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_npy_dtype_preserved(tmp_path, dtype):
    np.save(tmp_path / "e.npy", EMB.astype(dtype))
    np.save(tmp_path / "l.npy", np.array([1, 2, 1, 3]))
    ds = read_dataset(tmp_path / "e.npy", labels_path=tmp_path / "l.npy")
    assert ds.embeddings.dtype == dtype
    assert list(ds.labels) == ["1", "2", "1", "3"]


def test_npy_int_embeddings_float32(tmp_path):
    np.save(tmp_path / "e.npy", np.arange(8).reshape(4, 2))
    np.save(tmp_path / "l.npy", np.array(LABELS))
    ds = read_dataset(tmp_path / "e.npy", labels_path=tmp_path / "l.npy")
    assert ds.embeddings.dtype == np.float32


def test_npy_progress_called_once(tmp_path):
    np.save(tmp_path / "e.npy", EMB)
    np.save(tmp_path / "l.npy", np.array(LABELS))
    calls = []
    read_dataset(
        tmp_path / "e.npy",
        labels_path=tmp_path / "l.npy",
        progress=lambda a, b: calls.append((a, b)),
    )
    assert calls == [(4, 4)]


def test_npz_with_labels(tmp_path):
    np.savez(tmp_path / "d.npz", embeddings=EMB.astype(np.float64), labels=np.array(LABELS))
    ds = read_dataset(tmp_path / "d.npz")
    assert ds.embeddings.dtype == np.float64
    np.testing.assert_array_equal(ds.embeddings, EMB)
    assert list(ds.labels) == LABELS and all(type(v) is str for v in ds.labels)


def test_npz_single_unnamed_array_and_labels_file(tmp_path):
    np.savez(tmp_path / "d.npz", EMB)  # stored as arr_0
    (tmp_path / "l.txt").write_text("a\nb\na\nc")
    ds = read_dataset(tmp_path / "d.npz", labels_path=tmp_path / "l.txt")
    np.testing.assert_array_equal(ds.embeddings, EMB)
    assert list(ds.labels) == LABELS


def test_npz_labels_path_takes_precedence(tmp_path):
    np.savez(tmp_path / "d.npz", embeddings=EMB, labels=np.array(LABELS))
    np.save(tmp_path / "l.npy", np.array(["w", "x", "y", "z"]))
    ds = read_dataset(tmp_path / "d.npz", labels_path=tmp_path / "l.npy")
    assert list(ds.labels) == ["w", "x", "y", "z"]


def test_npz_flags_and_groups(tmp_path):
    np.savez(
        tmp_path / "d.npz",
        embeddings=EMB,
        labels=np.array(LABELS),
        is_query=np.array([True, False, True, True]),
        grp=np.array([1, 1, 2, 2]),
    )
    ds = read_dataset(tmp_path / "d.npz", group_column="grp")
    assert list(ds.is_query) == [True, False, True, True]
    assert ds.is_gallery is None
    assert list(ds.groups) == ["1", "1", "2", "2"]


# ---------------------------------------------------------------- labels files


def test_labels_txt_crlf_and_trailing_blank(tmp_path):
    np.save(tmp_path / "e.npy", EMB)
    (tmp_path / "l.txt").write_bytes(b" a\r\nb \r\na\r\nc\r\n\n")
    ds = read_dataset(tmp_path / "e.npy", labels_path=tmp_path / "l.txt")
    # Only the line ending is stripped: spaces are part of the label.
    assert list(ds.labels) == [" a", "b ", "a", "c"]


def test_labels_csv(tmp_path):
    np.save(tmp_path / "e.npy", EMB)
    (tmp_path / "l.csv").write_text("id,label\n1,007\n2,NA\n3,007\n4,x y\n")
    ds = read_dataset(tmp_path / "e.npy", labels_path=tmp_path / "l.csv")
    assert list(ds.labels) == ["007", "NA", "007", "x y"]


def test_labels_csv_custom_column(tmp_path):
    np.save(tmp_path / "e.npy", EMB)
    (tmp_path / "l.csv").write_text("cls\n1\n2\n1\n3\n")
    ds = read_dataset(tmp_path / "e.npy", labels_path=tmp_path / "l.csv", label_column="cls")
    assert list(ds.labels) == ["1", "2", "1", "3"]


def test_labels_parquet(tmp_path):
    np.save(tmp_path / "e.npy", EMB)
    write_parquet(
        tmp_path / "l.parquet",
        {"other": [0, 0, 0, 0], "label": pa.array([5, 6, 5, 7], type=pa.int16())},
    )
    ds = read_dataset(tmp_path / "e.npy", labels_path=tmp_path / "l.parquet")
    assert list(ds.labels) == ["5", "6", "5", "7"]


def test_labels_npy_bytes(tmp_path):
    np.save(tmp_path / "e.npy", EMB)
    np.save(tmp_path / "l.npy", np.array([b"a", b"b", b"a", b"c"]))
    ds = read_dataset(tmp_path / "e.npy", labels_path=tmp_path / "l.npy")
    assert list(ds.labels) == LABELS


# ---------------------------------------------------------------- errors


def test_error_missing_file(tmp_path):
    msg = error_of(tmp_path / "nope.parquet")
    assert "nope.parquet" in msg and "no such file" in msg


def test_error_missing_labels_file(tmp_path):
    np.save(tmp_path / "e.npy", EMB)
    msg = error_of(tmp_path / "e.npy", labels_path=tmp_path / "missing.txt")
    assert "missing.txt" in msg and "no such file" in msg


def test_error_unknown_extension(tmp_path):
    (tmp_path / "data.csv").write_text("a,b\n")
    msg = error_of(tmp_path / "data.csv")
    assert "data.csv" in msg and "'.csv'" in msg and ".parquet" in msg


def test_error_unknown_labels_extension(tmp_path):
    np.save(tmp_path / "e.npy", EMB)
    (tmp_path / "l.json").write_text("[]")
    msg = error_of(tmp_path / "e.npy", labels_path=tmp_path / "l.json")
    assert "l.json" in msg and "'.json'" in msg


@pytest.mark.parametrize("content", [b"", b"hello", b"PAR1garbagegarbagePAR1"])
def test_error_not_parquet(tmp_path, content):
    (tmp_path / "bad.parquet").write_bytes(content)
    msg = error_of(tmp_path / "bad.parquet")
    assert "bad.parquet" in msg and "not a Parquet file" in msg


def test_error_truncated_parquet(tmp_path):
    path = basic_parquet(tmp_path / "d.parquet")
    data = open(path, "rb").read()
    (tmp_path / "cut.parquet").write_bytes(data[: len(data) // 2])
    msg = error_of(tmp_path / "cut.parquet")
    assert "cut.parquet" in msg


def test_error_missing_embedding_column(tmp_path):
    path = write_parquet(
        tmp_path / "embeddings.parquet", {"id": [1], "emb": list_array(EMB[:1]), "label": ["a"]}
    )
    msg = error_of(path)
    assert msg.startswith(str(path))
    assert "no column 'embedding'; columns are: id, emb, label (use --embedding-column" in msg


def test_error_missing_label_column(tmp_path):
    path = write_parquet(tmp_path / "d.parquet", {"embedding": list_array(EMB), "cls": LABELS})
    msg = error_of(path)
    assert (
        "d.parquet" in msg
        and "no column 'label'" in msg
        and "cls" in msg
        and "--label-column" in msg
    )


@pytest.mark.parametrize("option", ["group_column", "query_column", "gallery_column"])
def test_error_missing_optional_column(tmp_path, option):
    path = basic_parquet(tmp_path / "d.parquet")
    msg = error_of(path, **{option: "zzz"})
    assert "d.parquet" in msg and "no column 'zzz'" in msg


def test_error_ragged(tmp_path):
    rows = [[0.0] * 64 for _ in range(20)]
    rows[17] = [0.0] * 63
    path = write_parquet(tmp_path / "data.parquet", {"embedding": rows, "label": ["a"] * 20})
    msg = error_of(path)
    assert msg == (
        f"{path}: column 'embedding' row 17 has 63 values, expected 64 "
        "(rows must all have the same length)"
    )


def test_error_ragged_in_later_row_group(tmp_path):
    rows = [[1.0, 2.0]] * 10
    rows = rows[:8] + [[1.0]] + rows[9:]
    path = write_parquet(
        tmp_path / "data.parquet", {"embedding": rows, "label": ["a"] * 10}, row_group_size=3
    )
    msg = error_of(path)
    assert "row 8 has 1 values, expected 2" in msg


def test_error_ragged_across_directory_files(tmp_path):
    d = tmp_path / "parts"
    d.mkdir()
    basic_parquet(d / "a.parquet")
    write_parquet(d / "b.parquet", {"embedding": [[1.0, 2.0]], "label": ["a"]})
    msg = error_of(d)
    assert "b.parquet" in msg and "row 0 has 2 values, expected 3" in msg


def test_error_fixed_size_mismatch_across_files(tmp_path):
    d = tmp_path / "parts"
    d.mkdir()
    basic_parquet(d / "a.parquet", kind="fixed")
    write_parquet(
        d / "b.parquet", {"embedding": list_array(EMB[:, :2].copy(), "fixed"), "label": LABELS}
    )
    msg = error_of(d)
    assert "b.parquet" in msg and "2 values per row, expected 3" in msg


def test_error_null_embedding_row(tmp_path):
    path = write_parquet(
        tmp_path / "d.parquet", {"embedding": [[1.0], None, [2.0]], "label": ["a", "b", "c"]}
    )
    msg = error_of(path)
    assert "d.parquet" in msg and "'embedding' row 1 is null" in msg


def test_error_null_inside_embedding(tmp_path):
    path = write_parquet(
        tmp_path / "d.parquet",
        {"embedding": [[1.0, 2.0], [3.0, 4.0], [5.0, None]], "label": ["a", "b", "c"]},
    )
    msg = error_of(path)
    assert "d.parquet" in msg and "row 2 contains a null" in msg


def test_error_non_numeric_list(tmp_path):
    path = write_parquet(tmp_path / "d.parquet", {"embedding": [["x"], ["y"]], "label": ["a", "b"]})
    msg = error_of(path)
    assert "d.parquet" in msg and "'embedding'" in msg and "lists of string" in msg


def test_error_embedding_not_a_list(tmp_path):
    path = write_parquet(tmp_path / "d.parquet", {"embedding": [1.0, 2.0], "label": ["a", "b"]})
    msg = error_of(path)
    assert (
        "d.parquet" in msg and "'embedding' has type double" in msg and "--embedding-columns" in msg
    )


def test_error_glob_non_numeric_column(tmp_path):
    path = write_parquet(
        tmp_path / "d.parquet", {"emb_0": [1.0, 2.0], "emb_1": ["x", "y"], "label": ["a", "b"]}
    )
    msg = error_of(path, embedding_columns="emb_*")
    assert "d.parquet" in msg and "column 'emb_1' has type string; expected numbers" in msg


def test_error_glob_matches_nothing(tmp_path):
    path = basic_parquet(tmp_path / "d.parquet")
    msg = error_of(path, embedding_columns="feat_*")
    assert "d.parquet" in msg and "no columns match 'feat_*'" in msg and "embedding, label" in msg


def test_error_glob_null_value(tmp_path):
    path = write_parquet(tmp_path / "d.parquet", {"emb_0": [1.0, None], "label": ["a", "b"]})
    msg = error_of(path, embedding_columns="emb_*")
    assert "d.parquet" in msg and "'emb_0' row 1 is null" in msg


def test_error_null_label(tmp_path):
    path = write_parquet(
        tmp_path / "d.parquet", {"embedding": list_array(EMB), "label": ["a", "b", None, None]}
    )
    msg = error_of(path)
    assert "d.parquet" in msg and "'label' row 2 is null" in msg


def test_error_null_label_in_later_row_group(tmp_path):
    path = write_parquet(
        tmp_path / "d.parquet",
        {"embedding": list_array(EMB), "label": ["a", "b", "c", None]},
        row_group_size=2,
    )
    assert "'label' row 3 is null" in error_of(path)


def test_error_null_group(tmp_path):
    path = basic_parquet(tmp_path / "d.parquet", grp=["x", None, "y", "y"])
    msg = error_of(path, group_column="grp")
    assert "d.parquet" in msg and "'grp' row 1 is null" in msg


def test_error_null_flag(tmp_path):
    path = basic_parquet(tmp_path / "d.parquet", is_gallery=[True, None, True, True])
    msg = error_of(path)
    assert "d.parquet" in msg and "'is_gallery' row 1 is null" in msg


def test_error_flag_bad_int(tmp_path):
    path = basic_parquet(tmp_path / "d.parquet", is_query=[0, 1, 2, 1])
    msg = error_of(path)
    assert "d.parquet" in msg and "'is_query' row 2 has value 2" in msg and "0/1" in msg


def test_error_flag_wrong_type(tmp_path):
    path = basic_parquet(tmp_path / "d.parquet", q=["yes", "no", "yes", "no"])
    msg = error_of(path, query_column="q")
    assert "d.parquet" in msg and "column 'q' has type string; expected boolean" in msg


def test_error_empty_parquet(tmp_path):
    path = write_parquet(
        tmp_path / "empty.parquet",
        {
            "embedding": pa.array([], type=pa.list_(pa.float32())),
            "label": pa.array([], type=pa.string()),
        },
    )
    msg = error_of(path)
    assert "empty.parquet" in msg and "0 rows" in msg


def test_error_empty_directory(tmp_path):
    (tmp_path / "parts").mkdir()
    msg = error_of(tmp_path / "parts")
    assert "parts" in msg and "no *.parquet files" in msg


def test_error_zero_dim(tmp_path):
    path = write_parquet(
        tmp_path / "d.parquet",
        {"embedding": pa.array([[], []], type=pa.list_(pa.float32())), "label": ["a", "b"]},
    )
    msg = error_of(path)
    assert "d.parquet" in msg and "0 values" in msg


def test_error_npy_without_labels(tmp_path):
    np.save(tmp_path / "e.npy", EMB)
    msg = error_of(tmp_path / "e.npy")
    assert "e.npy" in msg and "--labels FILE is required" in msg


def test_error_npz_without_labels(tmp_path):
    np.savez(tmp_path / "d.npz", embeddings=EMB)
    msg = error_of(tmp_path / "d.npz")
    assert "d.npz" in msg and "--labels FILE is required" in msg and "embeddings" in msg


def test_error_npz_ambiguous_arrays(tmp_path):
    np.savez(tmp_path / "d.npz", a=EMB, b=EMB)
    msg = error_of(tmp_path / "d.npz")
    assert "d.npz" in msg and "arrays are: a, b" in msg


def test_error_npz_bad_labels_length(tmp_path):
    np.savez(tmp_path / "d.npz", embeddings=EMB, labels=np.array(["a", "b"]))
    msg = error_of(tmp_path / "d.npz")
    assert "d.npz" in msg and "'labels'" in msg and "(4,)" in msg


@pytest.mark.parametrize("shape", [(5,), (2, 2, 2)])
def test_error_npy_not_2d(tmp_path, shape):
    np.save(tmp_path / "e.npy", np.zeros(shape, dtype=np.float32))
    msg = error_of(tmp_path / "e.npy", labels_path=tmp_path / "e.npy")
    assert "e.npy" in msg and f"shape {shape}" in msg and "2-D" in msg


def test_error_npy_empty(tmp_path):
    np.save(tmp_path / "e.npy", np.zeros((0, 3), dtype=np.float32))
    msg = error_of(tmp_path / "e.npy", labels_path=tmp_path / "e.npy")
    assert "e.npy" in msg and "0 rows" in msg


def test_error_npy_non_numeric(tmp_path):
    np.save(tmp_path / "e.npy", np.array([["a", "b"], ["c", "d"]]))
    msg = error_of(tmp_path / "e.npy", labels_path=tmp_path / "e.npy")
    assert "e.npy" in msg and "expected numbers" in msg


def test_error_npy_object_array(tmp_path):
    np.save(tmp_path / "e.npy", np.array([[1, "a"]], dtype=object), allow_pickle=True)
    np.save(tmp_path / "l.npy", np.array(["a"]))
    msg = error_of(tmp_path / "e.npy", labels_path=tmp_path / "l.npy")
    assert "e.npy" in msg and "not a valid .npy" in msg


@pytest.mark.parametrize("name", ["bad.npy", "bad.npz"])
def test_error_corrupt_numpy(tmp_path, name):
    (tmp_path / name).write_bytes(b"this is not numpy")
    (tmp_path / "l.txt").write_text("a\n")
    msg = error_of(tmp_path / name, labels_path=tmp_path / "l.txt")
    assert name in msg and "not a valid" in msg


def test_error_npy_with_group_column(tmp_path):
    np.save(tmp_path / "e.npy", EMB)
    msg = error_of(tmp_path / "e.npy", labels_path=tmp_path / "e.npy", group_column="g")
    assert "e.npy" in msg and "Parquet" in msg


def test_error_labels_count_txt(tmp_path):
    np.save(tmp_path / "e.npy", np.zeros((100, 2), dtype=np.float32))
    (tmp_path / "labels.txt").write_text("".join(f"l{i}\n" for i in range(99)))
    msg = error_of(tmp_path / "e.npy", labels_path=tmp_path / "labels.txt")
    assert msg == f"{tmp_path / 'labels.txt'}: 99 labels for 100 embeddings"


def test_error_labels_txt_empty_line(tmp_path):
    np.save(tmp_path / "e.npy", EMB)
    (tmp_path / "labels.txt").write_text("a\n\nb\nc\n")
    msg = error_of(tmp_path / "e.npy", labels_path=tmp_path / "labels.txt")
    assert "labels.txt" in msg and "line 2 is empty" in msg


def test_error_labels_txt_not_utf8(tmp_path):
    np.save(tmp_path / "e.npy", EMB)
    (tmp_path / "labels.txt").write_bytes(b"a\n\xff\xfe\nb\nc\n")
    msg = error_of(tmp_path / "e.npy", labels_path=tmp_path / "labels.txt")
    assert "labels.txt" in msg and "UTF-8" in msg


def test_error_labels_npy_2d(tmp_path):
    np.save(tmp_path / "e.npy", EMB)
    np.save(tmp_path / "l.npy", np.zeros((4, 2)))
    msg = error_of(tmp_path / "e.npy", labels_path=tmp_path / "l.npy")
    assert "l.npy" in msg and "1-D" in msg


def test_error_labels_npy_nan(tmp_path):
    np.save(tmp_path / "e.npy", EMB)
    np.save(tmp_path / "l.npy", np.array([1.0, np.nan, 1.0, 2.0]))
    msg = error_of(tmp_path / "e.npy", labels_path=tmp_path / "l.npy")
    assert "l.npy" in msg and "row 1 is NaN" in msg


def test_error_labels_csv_missing_column(tmp_path):
    np.save(tmp_path / "e.npy", EMB)
    (tmp_path / "l.csv").write_text("id,cls\n1,a\n2,b\n3,a\n4,c\n")
    msg = error_of(tmp_path / "e.npy", labels_path=tmp_path / "l.csv")
    assert "l.csv" in msg and "no column 'label'; columns are: id, cls" in msg


def test_error_labels_csv_empty_cell(tmp_path):
    np.save(tmp_path / "e.npy", EMB)
    (tmp_path / "l.csv").write_text('label\na\nb\n""\nc\n')
    msg = error_of(tmp_path / "e.npy", labels_path=tmp_path / "l.csv")
    assert "l.csv" in msg and "'label' row 2 is empty" in msg


def test_error_labels_csv_empty_file(tmp_path):
    np.save(tmp_path / "e.npy", EMB)
    (tmp_path / "l.csv").write_text("")
    msg = error_of(tmp_path / "e.npy", labels_path=tmp_path / "l.csv")
    assert "l.csv" in msg


def test_error_labels_parquet_count(tmp_path):
    np.save(tmp_path / "e.npy", EMB)
    write_parquet(tmp_path / "l.parquet", {"label": ["a", "b", "c"]})
    msg = error_of(tmp_path / "e.npy", labels_path=tmp_path / "l.parquet")
    assert msg == f"{tmp_path / 'l.parquet'}: 3 labels for 4 embeddings"


def test_error_labels_parquet_missing_column(tmp_path):
    np.save(tmp_path / "e.npy", EMB)
    write_parquet(tmp_path / "l.parquet", {"y": ["a", "b", "c", "d"]})
    msg = error_of(tmp_path / "e.npy", labels_path=tmp_path / "l.parquet")
    assert "l.parquet" in msg and "no column 'label'; columns are: y" in msg


def test_error_long_column_list_is_truncated(tmp_path):
    cols = {f"c{i}": [1.0] for i in range(50)}
    path = write_parquet(tmp_path / "d.parquet", {**cols, "label": ["a"]})
    msg = error_of(path)
    assert "(51 in all)" in msg and len(msg) < 400


def test_error_not_readable_reported(tmp_path, monkeypatch):
    # Runs even as root: the permission check itself is what is tested.
    path = basic_parquet(tmp_path / "d.parquet")
    monkeypatch.setattr(os, "access", lambda p, mode: False)
    msg = error_of(path)
    assert "d.parquet" in msg and "not readable" in msg


def test_error_null_fixed_size_row():
    """A null row in a fixed-size-list column: one line naming the file (and, from
    pyarrow 25 on, the row). The file was written by pyarrow 26; older pyarrow can
    neither write nor read such a null, and opis then reports the file unreadable."""
    path = os.path.join(os.path.dirname(__file__), "data", "null_fixed_size_row.parquet")
    msg = error_of(path)
    assert msg.startswith(path)
    if Version(pa.__version__) >= Version("25"):
        assert "'embedding' row 1 is null" in msg
    else:
        assert "cannot read Parquet data" in msg


SAMPLE = os.path.join(os.path.dirname(__file__), os.pardir, "sample_data")


@pytest.mark.parametrize("model", ["weak", "strong"])
def test_sample_data_formats_agree(model):
    parquet = os.path.join(SAMPLE, f"digits_{model}.parquet")
    a = read_dataset(parquet, group_column="group")
    b = read_dataset(
        os.path.join(SAMPLE, f"digits_{model}.npy"),
        labels_path=os.path.join(SAMPLE, "digits_labels.txt"),
    )
    assert a.embeddings.shape == (1797, a.dim) and a.embeddings.dtype == np.float32
    np.testing.assert_array_equal(a.embeddings, b.embeddings)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert sorted(set(a.labels)) == [f"digit_{d}" for d in range(10)]
    assert sorted(set(a.groups)) == ["customer_0", "customer_1", "customer_2"]
    assert a.is_query.all() and a.is_gallery.all()


# ---------------------------------------------------------------- format registry


#: formats whose files cannot hold text labels (they come from a labels file)
_NO_TEXT_LABELS = ("npy", "safetensors", "pt", "faiss")


def _write_every_format(tmp_path, kind: str) -> str:
    # each format written with its own library (tests/test_formats.py has the rest)
    flags = np.array([True, True, False, True])
    if kind == "parquet":
        return basic_parquet(tmp_path / "d.parquet", is_query=[True, True, False, True])
    if kind == "npy":
        np.save(tmp_path / "d.npy", EMB)
        return str(tmp_path / "d.npy")
    if kind in ("hf", "lance"):
        table = pa.table({"embedding": pa.array(EMB.tolist(), type=pa.list_(pa.float32())),
                          "label": LABELS, "is_query": flags})
        if kind == "lance":
            import lance

            lance.write_dataset(table, str(tmp_path / "d.lance"))
            return str(tmp_path / "d.lance")
        import datasets

        ds = datasets.Dataset(table)
        ds.save_to_disk(str(tmp_path / "hf"))
        return str(next((tmp_path / "hf").glob("*.arrow")))
    if kind == "safetensors":
        import safetensors.numpy

        safetensors.numpy.save_file(
            {"emb": EMB, "is_query": flags}, str(tmp_path / "d.safetensors"))
        return str(tmp_path / "d.safetensors")
    if kind == "pt":
        import torch

        torch.save({"emb": torch.from_numpy(EMB), "is_query": torch.from_numpy(flags)},
                   tmp_path / "d.pt")
        return str(tmp_path / "d.pt")
    if kind == "hdf5":
        import h5py

        with h5py.File(tmp_path / "d.h5", "w") as f:
            f["emb"], f["labels"], f["is_query"] = EMB, LABELS, flags
        return str(tmp_path / "d.h5")
    if kind == "faiss":
        import faiss

        index = faiss.IndexFlatL2(EMB.shape[1])
        index.add(EMB)
        faiss.write_index(index, str(tmp_path / "d.faiss"))
        return str(tmp_path / "d.faiss")
    np.savez(tmp_path / "d.npz", embeddings=EMB, labels=np.array(LABELS),
             is_query=np.array([True, True, False, True]))
    return str(tmp_path / "d.npz")


#: formats whose library is an optional extra: slow (tests/conftest.py), so that the
#: lowest-versions step (only the test extra) leaves them out instead of skipping them
_EXTRA_FORMATS = ("hf", "lance", "safetensors", "pt", "hdf5")


@pytest.mark.parametrize("kind", [pytest.param(k, marks=pytest.mark.slow) if k in _EXTRA_FORMATS
                                  else k for k in sorted(_FORMATS)])
def test_every_format_reader_returns_the_same_columns(tmp_path, kind):
    # The contract of a format reader: Columns with float embeddings, str labels
    # (when the format holds them), bool flags, and the files it read.
    path = _write_every_format(tmp_path, kind)
    seen: list[tuple[int, int, int]] = []
    spec = ColumnSpec(label_column=None) if kind in _NO_TEXT_LABELS else ColumnSpec()
    cols = _FORMATS[kind].read(path, spec, progress=None,
                               memory_check=lambda *shape: seen.append(shape))
    assert isinstance(cols, Columns)
    np.testing.assert_array_equal(cols.embeddings, EMB)
    if os.path.isdir(path):  # every file of a dataset folder
        assert cols.files and all(f.startswith(path + os.sep) for f in cols.files)
    else:
        assert cols.files == (path,)
    assert [s[:2] for s in seen] == [(4, 3)]
    if cols.labels is not None:
        assert list(cols.labels) == LABELS and all(type(v) is str for v in cols.labels)
        assert cols.is_query.dtype == np.bool_ and list(cols.is_query) == [1, 1, 0, 1]
    else:
        assert kind in _NO_TEXT_LABELS


# ---------------------------------------------------------------- import weight


def test_import_loads_no_engine_cli_or_plotting_library():
    # The readers run before any engine; numba, faiss, typer, rich and
    # matplotlib load only where they are used.
    heavy = ("numba", "faiss", "typer", "rich", "matplotlib")
    code = (
        "import sys, opis_cli.io\n"
        f"print(','.join(m for m in {heavy!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == ""
