"""Separate labels files: ``.npy``, ``.txt``, ``.csv`` and Parquet (file or directory).

Owns ``--labels FILE``: one label per embedding, returned as ``str`` (SPEC
section 1 compares labels as strings). A ``.txt`` file holds one label per
line; ``.csv`` and Parquet hold a ``label_column``; ``.npy`` a 1-D array.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa

from opis_cli.errors import InputError

from . import parquet
from ._columns import (HINTS, ColumnSpec, first_null, shared_strings, strings_from_arrow,
                       strings_from_numpy)
from ._files import (  # noqa: F401  (LABEL_SUFFIXES: declared without numpy, in _files)
    LABEL_SUFFIXES,
    PARQUET_SUFFIXES,
    arrow_errors,
    list_names,
    one_line,
    suffix,
)

__all__ = ["LABEL_SUFFIXES", "read_labels", "label_files"]


def label_files(path: str) -> list[str]:
    """The files behind a labels path, for provenance."""
    return parquet.parquet_files(path) if os.path.isdir(path) else [path]


def read_labels(path: str, label_column: str) -> np.ndarray:
    """Read a labels file.

    Parameters
    ----------
    path : str
        A ``.npy``, ``.txt``, ``.csv`` or Parquet file, or a directory of
        Parquet files (the suffix was checked by the caller).
    label_column : str
        The column of a ``.csv`` or Parquet file.

    Returns
    -------
    numpy.ndarray of str (object dtype), shape (N,)

    Raises
    ------
    InputError
        An unreadable file, a missing column, an empty or null label.
    """
    if os.path.isdir(path) or suffix(path) in PARQUET_SUFFIXES:
        cols = parquet.read_files(
            parquet.parquet_files(path),
            ColumnSpec(embedding_column=None, label_column=label_column),
            display=path,
            want_embeddings=False,
        )
        assert cols.labels is not None
        return cols.labels
    kind = suffix(path)
    if kind == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise InputError(
                f"{path}: not a valid .npy array of labels ({one_line(exc)}); "
                "save labels as a string or integer array"
            ) from exc
        return strings_from_numpy(arr, path, "labels")
    if kind == ".txt":
        return _read_txt(path)
    return _read_csv(path, label_column)


#: characters of a ``.txt`` labels file split into lines at a time (the lines
#: of one block are the only per-line strings alive beside the labels kept)
TXT_BLOCK_CHARS = 1 << 20


def _read_txt(path: str) -> np.ndarray:
    """One label per line. Only the line ending is stripped; trailing blank lines are ignored."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            text = fh.read()
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path}: not UTF-8 text (byte {exc.start}); expected one label per line"
        ) from exc
    except OSError as exc:
        raise InputError(f"{path}: not readable ({exc.strerror or exc})") from exc
    return shared_strings(_labels_of_lines(path, _lines(text)))


def _lines(text: str):
    """``text.split("\\n")``, a block of about ``TXT_BLOCK_CHARS`` at a time (cut
    at a newline), so that the lines are not all alive at once."""
    start, n = 0, len(text)
    while True:
        end = text.find("\n", min(start + TXT_BLOCK_CHARS, n))
        if end < 0:
            yield from text[start:].split("\n")
            return
        yield from text[start:end].split("\n")
        start = end + 1


def _labels_of_lines(path: str, lines):
    """The labels of ``lines``: a line's ``\\r`` ending stripped (CRLF files),
    trailing empty lines ignored, any other empty line an error."""
    empty = None  # 0-based number of the first empty line not yet followed by a label
    for i, line in enumerate(lines):
        if line.endswith("\r"):
            line = line[:-1]
        if line == "":
            empty = i if empty is None else empty
            continue
        if empty is not None:
            raise InputError(f"{path}: line {empty + 1} is empty; expected one label per line")
        yield line


def _read_csv(path: str, label_column: str) -> np.ndarray:
    """The ``label_column`` of a CSV file, as the literal text of each cell."""
    import pyarrow.csv as pacsv

    with arrow_errors(path, "not a readable CSV file"):
        # a quoted label may hold a newline (pyarrow's writer quotes it so)
        parse = pacsv.ParseOptions(newlines_in_values=True)
        reader = pacsv.open_csv(path, parse_options=parse)
        names = list(reader.schema.names)
        reader.close()
        if label_column not in names:
            raise InputError(
                f"{path}: no column '{label_column}'; columns are: {list_names(names)} "
                f"({HINTS['label']})"
            )
        # Labels are kept as the literal text ("007" stays "007"); only an
        # empty cell counts as missing.
        table = pacsv.read_csv(
            path,
            parse_options=parse,
            convert_options=pacsv.ConvertOptions(
                include_columns=[label_column],
                column_types={label_column: pa.string()},
                strings_can_be_null=True,
                null_values=[""],
            ),
        )
    col = table.column(label_column)
    row = 0
    for chunk in col.chunks:  # the first empty cell, without pyarrow.compute
        if chunk.null_count:
            raise InputError(f"{path}: column '{label_column}' row {row + first_null(chunk)} "
                             "is empty; expected a label in every row")
        row += len(chunk)
    return strings_from_arrow(col, path, label_column, 0)
