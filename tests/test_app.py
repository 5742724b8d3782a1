"""The application layer (opis_cli/app.py), the read options and the format declarations.

- ``ReadOptions`` and ``read_dataset``'s keywords read the same; both at once,
  or a keyword no format declares, is a ``TypeError``;
- a format is its reader plus one declaration: a toy format added to
  ``opis_cli.io.formats.FORMATS`` (and nothing else) is detected, read, takes
  its own option, refuses the others' and shows in the errors; the command
  line's format options are built from the same declarations;
- the use cases: ``evaluate_file`` is ``read_dataset`` + ``opis_cli.evaluate``,
  ``measure_file`` reads no group column, ``load_result`` reads a result
  JSON back, ``reads_shards`` is asked of the engine's capabilities.
"""

from __future__ import annotations

import json
from dataclasses import FrozenInstanceError
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from opis_cli import app
from opis_cli.cli import options as o
from opis_cli.errors import InputError
from opis_cli.io import ReadOptions, read_dataset
from opis_cli.io import formats as fm

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
WEAK = SAMPLE / "digits_weak.parquet"
WEAK_NPY = SAMPLE / "digits_weak.npy"
LABELS_TXT = SAMPLE / "digits_labels.txt"


def _same(a, b) -> None:
    np.testing.assert_array_equal(a.embeddings, b.embeddings)
    assert list(a.labels) == list(b.labels)
    for name in ("groups", "is_query", "is_gallery"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None)
        if x is not None:
            assert list(x) == list(y)
    assert a.sources == b.sources


# ------------------------------------------------------------------ ReadOptions


def test_read_options_read_as_the_keywords():
    _same(read_dataset(WEAK, ReadOptions(group_column="group")),
          read_dataset(WEAK, group_column="group"))
    _same(read_dataset(WEAK_NPY, ReadOptions(labels=LABELS_TXT)),
          read_dataset(WEAK_NPY, labels_path=LABELS_TXT))


def test_read_options_are_frozen_and_keep_the_format_options_given():
    o = ReadOptions(format_options={"tensor_key": "x", "hf_split": None, "dataset_key": "a"})
    assert o.format_options == (("dataset_key", "a"), ("tensor_key", "x"))
    assert o.option("tensor_key") == "x" and o.option("hf_split") is None
    assert o == ReadOptions(format_options=(("tensor_key", "x"), ("dataset_key", "a")))
    assert hash(o) == hash(ReadOptions(format_options={"dataset_key": "a", "tensor_key": "x"}))
    with pytest.raises(FrozenInstanceError):
        o.label_column = "y"  # type: ignore[misc]


def test_read_options_and_keywords_at_once_are_refused():
    with pytest.raises(TypeError, match="not both"):
        read_dataset(WEAK, ReadOptions(), group_column="group")
    with pytest.raises(TypeError, match="not both"):
        read_dataset(WEAK, ReadOptions(), tensor_key="x")
    # a keyword that no format declares is a typo, not a format option
    with pytest.raises(TypeError, match="'lable_column'"):
        read_dataset(WEAK, lable_column="y")


def test_a_format_option_of_another_format_names_the_formats_that_take_it():
    with pytest.raises(InputError) as e:
        read_dataset(WEAK, ReadOptions(format_options={"tensor_key": "x"}))
    assert str(e.value) == (f"{WEAK}: --tensor-key applies to safetensors and pt input; "
                            "this input is parquet")


# ------------------------------------------------------------------ one declaration


def _read_toy(path, spec, *, progress=None, memory_check=None):
    """A toy reader: a text file of rows ``label<sep>x<sep>y``."""
    from opis_cli.io._columns import Columns

    sep = spec.option("toy_sep") or ";"
    rows = [line.split(sep) for line in Path(path).read_text().splitlines() if line]
    emb = np.array([[float(v) for v in r[1:]] for r in rows], dtype=np.float32)
    if memory_check is not None:
        memory_check(*emb.shape, 4)
    labels = np.array([r[0] for r in rows], dtype=object)
    return Columns(emb, labels, None, None, None, (str(path),))


@pytest.fixture
def toy_format(monkeypatch):
    """A format added by its declaration alone (the reader lives in this test module)."""
    import sys

    monkeypatch.setitem(sys.modules, "opis_cli.io._toy", sys.modules[__name__])
    option = fm.FormatOption("toy_sep", "SEP", "toy: the separator of a row.")
    toy = fm.InputFormat("toy", (".toy",), "_toy:_read_toy", "toy (a test)", ".toy",
                         options=(option,))
    monkeypatch.setattr(fm, "FORMATS", {**fm.FORMATS, "toy": toy})
    monkeypatch.setattr(fm, "FORMAT_OPTIONS", {**fm.FORMAT_OPTIONS, "toy_sep": option})
    return toy


def test_a_new_format_is_its_reader_and_one_declaration(tmp_path, toy_format):
    path = tmp_path / "d.toy"
    path.write_text("a,1,0\nb,0,1\na,1,1\n")
    ds = read_dataset(path, toy_sep=",")
    assert list(ds.labels) == ["a", "b", "a"]
    np.testing.assert_array_equal(ds.embeddings, [[1, 0], [0, 1], [1, 1]])
    _same(ds, read_dataset(path, ReadOptions(format_options={"toy_sep": ","})))
    # its option is its own; the others' are refused by name
    with pytest.raises(InputError, match="--toy-sep applies to toy input; this input is "
                                         "parquet"):
        read_dataset(WEAK, toy_sep=",")
    with pytest.raises(InputError, match="--hf-split applies to hf input; this input is toy"):
        read_dataset(path, hf_split="train")
    # forced by name, whatever the suffix
    other = tmp_path / "d.txt"
    other.write_text("a;1;0\nb;0;1\n")
    assert list(read_dataset(other, format="toy").labels) == ["a", "b"]
    with pytest.raises(InputError) as e:
        read_dataset(tmp_path / "d.txt")
    assert str(e.value).endswith(".h5/.hdf5, .faiss/.index or .toy (or name the format "
                                 "with --format)")
    with pytest.raises(InputError, match="expected one of parquet, .*, faiss, toy$"):
        read_dataset(path, format="nope")
    assert fm.format_help().endswith("faiss (an index file) or toy (a test).")
    assert fm.path_formats().endswith("HDF5, FAISS index or .toy")  # its `expected`


def test_the_command_line_options_come_from_the_declarations(toy_format, monkeypatch):
    monkeypatch.setattr(o, "FORMAT_OPTIONS", fm.FORMAT_OPTIONS)
    seen = {}

    @o.with_format_options
    def command(input_format: o.FormatOpt = None, format_options: dict = None,
                label_column: str = "label") -> None:
        seen.update(format_options, label_column=label_column)

    cli = typer.Typer()
    cli.command()(command)
    cli.command("other")(lambda: None)
    res = CliRunner().invoke(cli, ["command", "--toy-sep", ",", "--tensor-key", "emb"])
    assert res.exit_code == 0, res.output
    assert seen == {**{name: None for name in fm.FORMAT_OPTIONS}, "toy_sep": ",",
                    "tensor_key": "emb", "label_column": "label"}


def test_every_command_that_reads_embeddings_takes_every_format_option():
    from opis_cli.cli.root import build_command

    assert [f.value for f in o.InputFormat] == list(fm.FORMATS)
    root = build_command(True)
    for name in ("evaluate", "compare", "calibrate"):
        params = {p.name: p for p in root.commands[name].params}
        assert params["input_format"].help == fm.format_help()
        if name != "compare":  # (compare reads result files, or embeddings with --embeddings)
            assert f"{fm.path_formats()} (see --format)." in params["path"].help
        for option in fm.FORMAT_OPTIONS.values():
            p = params[option.name]
            assert p.opts == [option.flag] and p.help == option.help
            assert p.metavar == option.metavar and p.rich_help_panel == o.ADVANCED
        assert "format_options" not in params


def test_declarations_are_well_formed():
    flags = [o.flag for o in fm.FORMAT_OPTIONS.values()]
    assert len(set(flags)) == len(flags)
    for fmt in fm.FORMATS.values():
        assert callable(fmt.read)
        assert fmt.suffixes and all(s.startswith(".") and s == s.lower() for s in fmt.suffixes)
        assert all(fm.FORMAT_OPTIONS[o.name] is o for o in fmt.options)
        assert fmt.choice.split()[0] == fmt.name


# ------------------------------------------------------------------ use cases


def test_evaluate_file_is_read_dataset_then_evaluate(tmp_path):
    from opis_cli import evaluate

    read = ReadOptions(group_column="group")
    result, warnings = app.evaluate_file(WEAK, read, num_thresholds=16)
    ds = read_dataset(WEAK, read)
    sources = [{"path": s.path, "sha256": s.sha256, "size_bytes": s.size_bytes}
               for s in ds.sources]
    direct = evaluate(ds.embeddings, ds.labels, groups=ds.groups, is_query=ds.is_query,
                      is_gallery=ds.is_gallery, sources=sources, group_column="group",
                      num_thresholds=16)
    a, b = json.loads(result.to_json()), json.loads(direct.to_json())
    a["provenance"].pop("time", None)
    b["provenance"].pop("time", None)
    assert a == b
    assert warnings == []
    # a saved result reads back as a side
    path = tmp_path / "r.json"
    path.write_text(result.to_json())
    side = app.load_result(path)
    assert side.name == str(path) and side.bootstrap is None and side.curves is None
    assert side.result.opis == result.opis and side.result.thresholds == result.thresholds


def test_an_input_error_of_the_evaluation_names_the_file(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "one.parquet"
    pq.write_table(pa.table({"embedding": [[1.0, 0.0], [0.0, 1.0]], "label": ["a", "a"]}),
                   path)
    with pytest.raises(InputError, match=f"^{path}: "):
        app.evaluate_file(path)


def test_measure_file_reads_no_group_column():
    # the group column named does not exist: an operating point never reads it
    point = app.measure_file(WEAK, 0.3, ReadOptions(group_column="no such column"))
    again = app.measure_file(WEAK, 0.3, ReadOptions())
    assert point == again
    with pytest.raises(InputError, match="no such column"):
        read_dataset(WEAK, ReadOptions(group_column="no such column"))


def test_reads_shards_asks_the_engines_capabilities():
    from opis_cli.engines.registry import NAMES, capabilities

    sharding = [n for n in NAMES if capabilities(n).shards]
    local = [n for n in NAMES if not capabilities(n).shards]
    assert sharding and local
    plain = ReadOptions()
    assert all(app.reads_shards(WEAK, plain, n) for n in sharding)
    assert not any(app.reads_shards(WEAK, plain, n) for n in local)
    engine = sharding[0]
    for read in (ReadOptions(labels=LABELS_TXT), ReadOptions(embedding_columns="e*"),
                 ReadOptions(format="npy"), ReadOptions(format_options={"hf_split": "x"})):
        assert not app.reads_shards(WEAK, read, engine)
    assert not app.reads_shards(WEAK_NPY, plain, engine)
    assert app.reads_shards(WEAK, ReadOptions(format="parquet", group_column="group"), engine)


def test_the_formats_page_lists_every_declared_format_and_option():
    page = (Path(__file__).resolve().parents[1] / "docs" / "how-to" / "input-formats.md")
    text = page.read_text(encoding="utf-8")
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 5 and cells[2].startswith("`") and cells[2] != "`--format`":
            rows[cells[2].strip("`")] = cells[1]
    assert list(rows) == list(fm.FORMATS)
    for name, fmt in fm.FORMATS.items():
        assert all(f"`{s}`" in rows[name] or f"`*{s}`" in rows[name] for s in fmt.suffixes)
    for option in fm.FORMAT_OPTIONS.values():
        assert option.flag in text
