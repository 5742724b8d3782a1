"""The input formats of issue 15: Hugging Face datasets, Lance, safetensors, PyTorch, HDF5, FAISS.

Every reader is tested the same way: one seeded dataset (small-integer rows,
so with tied distances and duplicate rows; a query/gallery split and a group
column where the format carries columns) is written with the format's own
library and with pyarrow as Parquet, and ``opis evaluate --json -`` must give
the same JSON for both, apart from the provenance (file names and hashes).
Each error path exits 2 with one ``Error:`` line, no traceback and no output
file.

The tests that need an optional extra (``hf``, ``lance``, ``safetensors``,
``hdf5``; torch from ``train``) are listed in ``SLOW`` of conftest.py, so
that the lowest-versions CI step (only the ``test`` extra) leaves them out; those
that simulate a missing library, and the FAISS ones (a core dependency), run
everywhere.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_gen import integer_rows
from opis_cli.cli import main
from opis_cli.io import read_dataset

SEED = 15


@dataclass(frozen=True)
class Data:
    emb: np.ndarray  # float32 (N, D), small integers: ties and duplicate rows
    labels: np.ndarray  # int64 (N,)
    groups: np.ndarray  # int64 (N,)
    is_query: np.ndarray  # bool (N,)
    is_gallery: np.ndarray  # bool (N,)


@pytest.fixture(scope="module")
def data() -> Data:
    emb, labels = integer_rows(SEED, n=72, dim=5, n_classes=5)
    rng = np.random.default_rng(SEED)
    is_query = rng.random(len(labels)) < 0.7
    is_gallery = ~is_query | (rng.random(len(labels)) < 0.5)
    return Data(emb, np.array([int(s[1:]) for s in labels], dtype=np.int64),
                rng.integers(0, 3, size=len(labels)).astype(np.int64), is_query, is_gallery)


def evaluate(*args) -> tuple[int, str, str]:
    """``opis evaluate ARGS`` in-process: (exit code, stdout, stderr)."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["evaluate", *(str(a) for a in args)])
    return code, out.getvalue(), err.getvalue()


def result_json(*args) -> dict:
    """The result JSON of ``opis evaluate ARGS --json -`` without its provenance."""
    code, out, err = evaluate(*args, "--json", "-", "-q")
    assert code == 0, err
    doc = json.loads(out)
    doc.pop("provenance")
    return doc


def one_error(tmp_path: Path, *args, needles=()) -> str:
    """Run ``opis evaluate ARGS --json OUT``: exit 2, one ``Error:`` line, no OUT written."""
    target = tmp_path / "never.json"
    code, out, err = evaluate(*args, "--json", target)
    assert "Traceback" not in err, err
    assert code == 2, (code, err)
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("Error: ")
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert not target.exists()
    return lines[0]


def parquet_of(tmp_path: Path, d: Data, *, columns: bool) -> Path:
    """The reference: the same rows as Parquet (with the flags and group when ``columns``)."""
    cols = {"embedding": pa.array(list(d.emb), type=pa.list_(pa.float32())),
            "label": pa.array(d.labels)}
    if columns:
        cols |= {"group": pa.array(d.groups), "is_query": pa.array(d.is_query),
                 "is_gallery": pa.array(d.is_gallery)}
    path = tmp_path / ("ref_columns.parquet" if columns else "ref.parquet")
    pq.write_table(pa.table(cols), path)
    return path


@pytest.fixture
def reference(tmp_path, data):
    """``reference(columns)``: the result JSON of the Parquet copy."""

    def ref(columns: bool) -> dict:
        path = parquet_of(tmp_path, data, columns=columns)
        return result_json(path, *(["--group-column", "group"] if columns else []))

    return ref


def labels_npy(tmp_path: Path, d: Data) -> Path:
    path = tmp_path / "labels.npy"
    np.save(path, d.labels)
    return path


# ---------------------------------------------------------------- Hugging Face datasets


def hf_dataset(d: Data, *, emb=None):
    import datasets as datasets
    features = datasets.Features({
        "embedding": datasets.Sequence(datasets.Value("float32")),
        "label": datasets.Value("int64"), "group": datasets.Value("int64"),
        "is_query": datasets.Value("bool"), "is_gallery": datasets.Value("bool")})
    rows = list(d.emb) if emb is None else emb
    return datasets.Dataset.from_dict(
        {"embedding": [list(map(float, r)) for r in rows], "label": d.labels.tolist(),
         "group": d.groups.tolist(), "is_query": d.is_query.tolist(),
         "is_gallery": d.is_gallery.tolist()}, features=features)


def test_hf_saved_dataset_and_its_arrow_file_match_parquet(tmp_path, data, reference):
    folder = tmp_path / "hf_ds"
    hf_dataset(data).save_to_disk(str(folder))
    expected = reference(columns=True)
    assert result_json(folder, "--group-column", "group") == expected
    arrow = sorted(folder.glob("*.arrow"))
    assert len(arrow) == 1
    assert result_json(arrow[0], "--group-column", "group") == expected


def test_hf_dataset_dict_split(tmp_path, data, reference):
    import datasets as datasets
    folder = tmp_path / "hf_dict"
    other = hf_dataset(data).select(range(10))
    datasets.DatasetDict({"train": other, "test": hf_dataset(data)}).save_to_disk(str(folder))
    assert result_json(folder, "--hf-split", "test", "--group-column", "group") == \
        reference(columns=True)
    one_error(tmp_path, folder, needles=(str(folder), "train", "test", "--hf-split"))
    one_error(tmp_path, folder, "--hf-split", "valid",
              needles=("no split 'valid'", "train", "test"))


def test_hf_class_label_is_read_as_class_names(tmp_path, data):
    import datasets as datasets
    names = [f"class_{i}" for i in range(int(data.labels.max()) + 1)]
    ds = datasets.Dataset.from_dict(
        {"embedding": [list(map(float, r)) for r in data.emb], "label": data.labels.tolist()},
        features=datasets.Features({"embedding": datasets.Sequence(datasets.Value("float32")),
                                    "label": datasets.ClassLabel(names=names)}))
    ds.save_to_disk(str(tmp_path / "cl"))
    read = read_dataset(tmp_path / "cl")
    assert read.labels.tolist() == [names[i] for i in data.labels]
    np.testing.assert_array_equal(read.embeddings, data.emb)


def test_hf_ragged_embeddings(tmp_path, data):
    rows = [list(map(float, r)) for r in data.emb]
    rows[7] = rows[7][:3]
    hf_dataset(data, emb=rows).save_to_disk(str(tmp_path / "ragged"))
    one_error(tmp_path, tmp_path / "ragged", needles=("column 'embedding' row 7 has 3 values",
                                                      "expected 5"))


def test_hf_missing_column(tmp_path, data):
    hf_dataset(data).save_to_disk(str(tmp_path / "ds"))
    one_error(tmp_path, tmp_path / "ds", "--group-column", "customer",
              needles=("no column 'customer'", "--group-column"))


# ---------------------------------------------------------------- Lance


def test_lance_dataset_matches_parquet(tmp_path, data, reference):
    import lance as lance
    table = pa.table({
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(data.emb.ravel()), 5),
        "label": pa.array(data.labels), "group": pa.array(data.groups),
        "is_query": pa.array(data.is_query), "is_gallery": pa.array(data.is_gallery)})
    path = tmp_path / "vectors.lance"
    lance.write_dataset(table, str(path), max_rows_per_file=30)  # several fragments
    assert result_json(path, "--group-column", "group") == reference(columns=True)
    one_error(tmp_path, path, "--label-column", "class",
              needles=("no column 'class'", "--label-column"))


# ---------------------------------------------------------------- safetensors


def test_safetensors_matches_parquet_and_is_memory_mapped(tmp_path, data, reference):
    import safetensors.numpy as st
    path = tmp_path / "emb.safetensors"
    st.save_file({"emb": data.emb, "labels": data.labels, "group": data.groups,
                  "is_query": data.is_query, "is_gallery": data.is_gallery}, str(path))
    assert result_json(path, "--group-column", "group") == reference(columns=True)
    assert isinstance(read_dataset(path).embeddings, np.memmap)


def test_safetensors_keys_and_labels_file(tmp_path, data, reference):
    import safetensors.numpy as st
    path = tmp_path / "two.safetensors"
    st.save_file({"a": data.emb, "b": data.emb * 2, "y": data.labels}, str(path))
    expected = reference(columns=False)
    assert result_json(path, "--tensor-key", "a", "--tensor-labels-key", "y") == expected
    assert result_json(path, "--tensor-key", "a", "--labels", labels_npy(tmp_path, data)) == \
        expected
    # no key and two 2-D float tensors: the keys are listed
    one_error(tmp_path, path, needles=("2 2-D float tensors", "a (72, 5) F32", "b (72, 5)",
                                       "--tensor-key"))
    one_error(tmp_path, path, "--tensor-key", "c", needles=("no tensor 'c'", "--tensor-key"))
    one_error(tmp_path, path, "--tensor-key", "a",
              needles=("no tensor 'labels'", "--tensor-labels-key", "--labels"))
    # a 1-D tensor as the embeddings
    one_error(tmp_path, path, "--tensor-key", "y", "--tensor-labels-key", "y",
              needles=("tensor 'y' has shape (72,)", "expected a 2-D array"))


def test_safetensors_wrong_dtype_and_nan(tmp_path, data):
    import safetensors.numpy as st
    path = tmp_path / "bad.safetensors"
    st.save_file({"emb": data.emb, "labels": data.labels[:-1]}, str(path))
    one_error(tmp_path, path, needles=("tensor 'labels' has shape (71,)", "expected (72,)"))
    nan = data.emb.copy()
    nan[3, 1] = np.nan
    st.save_file({"emb": nan, "labels": data.labels}, str(path))
    one_error(tmp_path, path, needles=("NaN",))
    st.save_file({"emb": data.emb.astype(np.int32) > 0, "labels": data.labels}, str(path))
    one_error(tmp_path, path, "--tensor-key", "emb",
              needles=("tensor 'emb' has type bool", "expected numbers"))
    path.write_bytes(b"not a safetensors file at all")
    one_error(tmp_path, path, needles=("not a valid safetensors file",))


# ---------------------------------------------------------------- PyTorch


def test_pt_dict_matches_parquet_and_is_memory_mapped(tmp_path, data, reference):
    import torch as torch
    path = tmp_path / "emb.pt"
    torch.save({"embeddings": torch.from_numpy(data.emb),
                "labels": torch.from_numpy(data.labels), "group": torch.from_numpy(data.groups),
                "is_query": torch.from_numpy(data.is_query),
                "is_gallery": torch.from_numpy(data.is_gallery), "epoch": 3}, path)
    assert result_json(path, "--group-column", "group") == reference(columns=True)
    assert isinstance(read_dataset(path).embeddings, np.ndarray)


def test_pt_single_tensor_with_labels_file(tmp_path, data, reference):
    import torch as torch
    path = tmp_path / "emb.pth"
    torch.save(torch.from_numpy(data.emb), path)
    expected = reference(columns=False)
    assert result_json(path, "--labels", labels_npy(tmp_path, data)) == expected
    one_error(tmp_path, path, needles=("no tensor 'labels'", "--labels"))
    torch.save(torch.from_numpy(data.emb), path, _use_new_zipfile_serialization=False)
    assert result_json(path, "--labels", labels_npy(tmp_path, data)) == expected
    torch.save({"emb": torch.from_numpy(data.emb).to(torch.bfloat16),
                "labels": torch.from_numpy(data.labels)}, path)
    one_error(tmp_path, path, "--tensor-key", "emb",
              needles=("tensor 'emb' has type bfloat16", "expected float16/32/64"))
    torch.save([1, 2, 3], path)
    one_error(tmp_path, path, needles=("holds list", "expected a tensor or a dict"))


class _Payload:
    """Pickles to ``open(MARKER, "w")``: unpickling it creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pt_malicious_pickle_is_refused_and_never_runs(tmp_path, data):
    import torch as torch
    marker = tmp_path / "payload_ran"
    path = tmp_path / "evil.pt"
    torch.save({"embeddings": torch.from_numpy(data.emb),
                "labels": torch.from_numpy(data.labels), "x": _Payload(marker)}, path)
    line = one_error(tmp_path, path, needles=(str(path), "refused", "weights_only=True"))
    assert "open" in line
    assert not marker.exists()
    # the legacy (non-zip) format, which cannot be memory-mapped, likewise
    legacy = tmp_path / "evil_legacy.pt"
    torch.save({"embeddings": torch.from_numpy(data.emb), "x": _Payload(marker)}, legacy,
               _use_new_zipfile_serialization=False)
    one_error(tmp_path, legacy, needles=(str(legacy), "refused"))
    assert not marker.exists()
    # the payload is real: a plain unpickling runs it
    torch.load(path, weights_only=False)
    assert marker.exists()


# ---------------------------------------------------------------- HDF5


def test_hdf5_matches_parquet_mapped_or_not(tmp_path, data, reference):
    import h5py as h5py
    path = tmp_path / "emb.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("val")
        g["emb"] = data.emb
        g.create_dataset("names", data=np.array([str(v) for v in data.labels], dtype=object),
                         dtype=h5py.string_dtype())
        g.create_dataset("emb_gzip", data=data.emb, compression="gzip", chunks=(8, 5))
        f["group"] = data.groups
        f["query"] = data.is_query
        f["is_gallery"] = data.is_gallery  # found by its name, as in Parquet
    expected = reference(columns=True)
    common = ("--dataset-labels-key", "val/names", "--group-column", "group",
              "--query-column", "query")
    assert result_json(path, "--dataset-key", "val/emb", *common) == expected
    assert result_json(path, "--dataset-key", "val/emb_gzip", *common) == expected
    kw = dict(dataset_key="val/emb", dataset_labels_key="val/names")
    assert isinstance(read_dataset(path, **kw).embeddings, np.memmap)
    kw["dataset_key"] = "val/emb_gzip"
    assert not isinstance(read_dataset(path, **kw).embeddings, np.memmap)
    one_error(tmp_path, path, needles=("2 2-D float datasets", "val/emb (72, 5) float32",
                                       "--dataset-key"))
    one_error(tmp_path, path, "--dataset-key", "val/nope",
              needles=("no dataset 'val/nope'", "--dataset-key"))
    one_error(tmp_path, path, "--dataset-key", "val/emb",
              needles=("no dataset 'labels'", "--dataset-labels-key"))


def test_hdf5_wrong_dtype(tmp_path, data):
    import h5py as h5py
    path = tmp_path / "c.hdf5"
    with h5py.File(path, "w") as f:
        f["emb"] = data.emb.astype(np.complex64)
        f["labels"] = data.labels
    one_error(tmp_path, path, "--dataset-key", "emb",
              needles=("dataset 'emb' has type complex64", "expected numbers"))
    path.write_bytes(b"\x89HDF not really")
    one_error(tmp_path, path, needles=("not a valid HDF5 file",))


# ---------------------------------------------------------------- FAISS (a core dependency)


def test_faiss_flat_and_ivf_flat_match_parquet(tmp_path, data, reference):
    import faiss

    labels = labels_npy(tmp_path, data)
    expected = reference(columns=False)
    flat = faiss.IndexFlatL2(5)
    flat.add(data.emb)
    faiss.write_index(flat, str(tmp_path / "flat.faiss"))
    assert result_json(tmp_path / "flat.faiss", "--labels", labels) == expected
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatL2(5), 5, 4)
    ivf.train(data.emb)
    ivf.add(data.emb)
    faiss.write_index(ivf, str(tmp_path / "ivf.index"))
    assert result_json(tmp_path / "ivf.index", "--labels", labels) == expected


def test_faiss_errors(tmp_path, data):
    import faiss

    flat = faiss.IndexFlatIP(5)
    flat.add(data.emb)
    faiss.write_index(flat, str(tmp_path / "flat.faiss"))
    one_error(tmp_path, tmp_path / "flat.faiss", needles=("holds no labels", "--labels FILE"))
    one_error(tmp_path, tmp_path / "flat.faiss", "--labels", labels_npy(tmp_path, data),
              "--group-column", "g", needles=("holds only vectors",))
    rng = np.random.default_rng(0)
    pq_index = faiss.IndexPQ(8, 2, 4)
    train = rng.normal(size=(300, 8)).astype(np.float32)
    pq_index.train(train)
    pq_index.add(train[:72])
    faiss.write_index(pq_index, str(tmp_path / "pq.faiss"))
    one_error(tmp_path, tmp_path / "pq.faiss", "--labels", labels_npy(tmp_path, data),
              needles=("IndexPQ", "IndexFlatL2", "IndexIVFFlat"))
    (tmp_path / "junk.index").write_bytes(b"junk")
    one_error(tmp_path, tmp_path / "junk.index", "--labels", labels_npy(tmp_path, data),
              needles=("not a FAISS index file",))


# ---------------------------------------------------------------- detection, --format, libraries


def test_format_forces_the_reader(tmp_path, data, reference):
    import faiss

    flat = faiss.IndexFlatL2(5)
    flat.add(data.emb)
    faiss.write_index(flat, str(tmp_path / "vectors.bin"))
    labels = labels_npy(tmp_path, data)
    assert result_json(tmp_path / "vectors.bin", "--format", "faiss", "--labels", labels) == \
        reference(columns=False)
    one_error(tmp_path, tmp_path / "vectors.bin", "--labels", labels,
              needles=("unknown input file type '.bin'", "--format"))
    one_error(tmp_path, tmp_path / "vectors.bin", "--format", "npy", "--labels", labels,
              needles=("not a valid .npy",))


def test_compare_takes_the_format_options(tmp_path, data, capsys):
    import faiss

    for name, rows in (("base.bin", data.emb), ("cand.bin", data.emb[:, ::-1].copy())):
        index = faiss.IndexFlatL2(5)
        index.add(rows)
        faiss.write_index(index, str(tmp_path / name))
    labels = labels_npy(tmp_path, data)
    capsys.readouterr()
    code = main(["compare", str(tmp_path / "base.bin"), str(tmp_path / "cand.bin"),
                 "--format", "faiss", "--labels", str(labels), "--json", "-", "-q"])
    out, err = capsys.readouterr()
    assert code == 0, err
    base = json.loads(out)["comparison"]
    assert base["baseline"].endswith("base.bin") and base["candidate"].endswith("cand.bin")
    code = main(["compare", str(tmp_path / "base.bin"), str(tmp_path / "cand.bin"),
                 "--labels", str(labels), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--format" in err


def test_an_option_of_another_format_is_an_error(tmp_path, data):
    path = parquet_of(tmp_path, data, columns=False)
    one_error(tmp_path, path, "--tensor-key", "emb",
              needles=("--tensor-key applies to safetensors and pt input", "parquet"))
    one_error(tmp_path, path, "--hf-split", "test", needles=("--hf-split applies to hf",))


@pytest.mark.parametrize("module, extra, make", [
    ("datasets", "hf", lambda p: _hf_folder(p)),
    ("lance", "lance", lambda p: (p / "t.lance").mkdir() or p / "t.lance"),
    ("safetensors", "safetensors", lambda p: _touch(p / "e.safetensors")),
    ("torch", "train", lambda p: _touch(p / "e.pt")),
    ("h5py", "hdf5", lambda p: _touch(p / "e.h5")),
])
def test_a_missing_library_names_its_extra(tmp_path, monkeypatch, module, extra, make):
    monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    path = make(tmp_path)
    one_error(tmp_path, path, needles=(str(path), f"'{module}'",
                                       f"pip install 'opis-cli[{extra}]'"))


def test_a_broken_library_is_one_line_too(tmp_path, monkeypatch):
    import opis_cli.io._files as files

    real = files.importlib.import_module

    def broken(name, *args, **kwargs):
        # only h5py is broken: the package's own lazy imports go through importlib too
        if name != "h5py":
            return real(name, *args, **kwargs)
        raise ValueError("numpy.dtype size changed,\nmay indicate binary incompatibility")

    monkeypatch.setattr(files.importlib, "import_module", broken)
    path = _touch(tmp_path / "e.h5")
    one_error(tmp_path, path, needles=("'h5py'", "fails to import", "binary incompatibility",
                                       "pip install 'opis-cli[hdf5]'"))


def _touch(path: Path) -> Path:
    path.write_bytes(b"\0" * 16)
    return path


def _hf_folder(tmp: Path) -> Path:
    folder = tmp / "hf"
    folder.mkdir()
    for name in ("dataset_info.json", "state.json"):
        (folder / name).write_text("{}")
    return folder
