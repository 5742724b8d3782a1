"""``read_dataset``: embeddings, labels and per-row flags from any supported input.

Owns :class:`Dataset`, :class:`SourceFile`, :class:`ReadOptions` and the
steps around the format readers: check the paths, detect the input's format
and dispatch to its reader (both declared in :mod:`opis_cli.io.formats`),
attach a separate labels file, and record the sha256 of every file read for
provenance.

Adding a format is one module with a reader that returns
:class:`~opis_cli.io._columns.Columns` (see that module), plus its
declaration in :data:`opis_cli.io.formats.FORMATS`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from opis_cli.errors import InputError

# No numpy or pyarrow at import (the readers load them): the command line builds its
# ReadOptions and checks the columns (check_columns) before they load.
from ._files import LABEL_SUFFIXES, check_suffix, parquet_files
from ._spec import ColumnSpec, MemoryCheck, ProgressCallback
from . import formats

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from .formats import InputFormat

__all__ = ["Dataset", "ReadOptions", "SourceFile", "check_columns", "read_dataset"]

_HASH_CHUNK = 1 << 20  # 1 MiB


@dataclass(frozen=True)
class SourceFile:
    """One file that was read, for provenance.

    Attributes
    ----------
    path : str
        The path as given (for a directory input, the directory joined with
        the file name).
    sha256 : str
        Hex digest of the file's bytes.
    size_bytes : int
        File size in bytes.
    """

    path: str
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class Dataset:
    """Embeddings with their labels and optional per-row columns.

    Attributes
    ----------
    embeddings : numpy.ndarray, shape (N, D)
        float16, float32 or float64 as stored (integer inputs become
        float32). For ``.npy`` (unless read with ``owned=True``),
        safetensors and contiguous HDF5 input this is a read-only
        ``numpy.memmap``.
    labels : numpy.ndarray, shape (N,), dtype object
        Python ``str`` labels; SPEC section 1 compares labels as strings.
    groups : numpy.ndarray of str (object dtype), shape (N,), or None
        The group of each row, only when a group column was asked for.
    is_query : numpy.ndarray of bool, shape (N,), or None
        None means every row is a query.
    is_gallery : numpy.ndarray of bool, shape (N,), or None
        None means every row is in the gallery.
    sources : tuple of SourceFile
        Every file read, in reading order (inputs first, then labels).
    """

    embeddings: np.ndarray
    labels: np.ndarray
    groups: np.ndarray | None
    is_query: np.ndarray | None
    is_gallery: np.ndarray | None
    sources: tuple[SourceFile, ...]

    @property
    def n_samples(self) -> int:
        """Number of rows ``N``."""
        return int(self.embeddings.shape[0])

    @property
    def dim(self) -> int:
        """Embedding dimension ``D``."""
        return int(self.embeddings.shape[1])


@dataclass(frozen=True)
class ReadOptions:
    """How to read an embeddings input: every option of :func:`read_dataset` that
    says which columns and format to read (the command line builds one from its
    options and hands it down).

    Attributes
    ----------
    labels : str or os.PathLike, optional
        A separate labels file (``--labels``); see ``labels_path`` of
        :func:`read_dataset`.
    embedding_column, embedding_columns, label_column, group_column, query_column, gallery_column
        As the keywords of :func:`read_dataset`.
    format : str, optional
        One of :data:`opis_cli.io.formats.FORMATS` (default: from the path).
    format_options : tuple of (str, str)
        The options of some formats (``hf_split``, ``tensor_key``, ...: the
        :class:`~opis_cli.io.formats.FormatOption` names), those given only,
        sorted by name. A mapping may be given; None values are dropped.
    """

    labels: str | os.PathLike[str] | None = None
    embedding_column: str = "embedding"
    embedding_columns: str | None = None
    label_column: str = "label"
    group_column: str | None = None
    query_column: str | None = None
    gallery_column: str | None = None
    format: str | None = None
    format_options: tuple[tuple[str, str], ...] | Mapping[str, str | None] = ()

    def __post_init__(self) -> None:
        given = dict(self.format_options)
        object.__setattr__(self, "format_options",
                           tuple(sorted((k, v) for k, v in given.items() if v is not None)))

    def option(self, name: str) -> str | None:
        """The value of format option ``name``, or None when not given."""
        return dict(self.format_options).get(name)


def read_dataset(
    path: str | os.PathLike[str],
    options: ReadOptions | None = None,
    *,
    labels_path: str | os.PathLike[str] | None = None,
    embedding_column: str = "embedding",
    embedding_columns: str | None = None,
    label_column: str = "label",
    group_column: str | None = None,
    query_column: str | None = None,
    gallery_column: str | None = None,
    progress: ProgressCallback | None = None,
    check_memory_fits: bool = True,
    memory_available: int | None = None,
    format: str | None = None,
    owned: bool = False,
    **format_options: str | None,
) -> Dataset:
    """Read a dataset of embeddings and labels.

    Parameters
    ----------
    path : str or os.PathLike
        A Parquet file (``.parquet``/``.pq``), a directory whose ``*.parquet``
        files are read in name order as one dataset, a ``.npy`` file
        (memory-mapped), a ``.npz`` file, a Hugging Face dataset folder
        (``save_to_disk``) or ``.arrow`` file, a Lance dataset (``.lance``
        folder), a ``.safetensors`` or PyTorch ``.pt``/``.pth`` tensor file,
        an HDF5 file (``.h5``/``.hdf5``) or a FAISS index (``.faiss``/
        ``.index``). The formats after ``.npz`` need optional libraries
        (docs/how-to/input-formats.md); they are declared in
        :data:`opis_cli.io.formats.FORMATS`.
    options : ReadOptions, optional
        Every option below that says what to read (``labels_path`` is its
        ``labels``), as one object; then none of those keywords may be given.
    labels_path : str or os.PathLike, optional
        Labels in a separate file: ``.npy`` (1-D array), ``.txt`` (one label
        per line), ``.csv`` or Parquet (column ``label_column``). Required for
        ``.npy`` input and for ``.npz`` input without a ``labels`` array. When
        given, it takes precedence over labels stored with the embeddings.
    embedding_column : str, default "embedding"
        Parquet column holding one list (list, large_list or fixed_size_list)
        of numbers per row.
    embedding_columns : str, optional
        An ``fnmatch`` pattern (e.g. ``"emb_*"``) selecting one numeric scalar
        column per dimension, kept in file order. Columns used as label,
        group, query or gallery columns are never matched. Overrides
        ``embedding_column``.
    label_column : str, default "label"
        Label column (any type; converted to ``str``).
    group_column : str, optional
        Column (or ``.npz`` array) with each row's group; read only if given.
    query_column, gallery_column : str, optional
        Boolean (or 0/1 integer) columns marking query and gallery rows.
        When not given, columns (or ``.npz`` arrays) literally named
        ``is_query`` / ``is_gallery`` are used if present.
    progress : callable, optional
        Called as ``progress(rows_done, rows_total)`` after each Parquet row
        group (once at the end for NumPy inputs).
    check_memory_fits : bool, default True
        Before the embeddings are read (Parquet, .npy) or right after
        (.npz), compare :func:`opis_cli.memory.memory_needed` for their shape with
        ``memory_available`` and raise ``InputError`` if it will not fit.
    memory_available : int, optional
        Bytes available; default :func:`opis_cli.memory.available_memory` (the check is
        skipped when that is unknown).
    format : str, optional
        One of :data:`opis_cli.io.formats.FORMATS`: read ``path`` as this
        format whatever its name (default: detected from the path).
    **format_options : str, optional
        The options of some formats (declared with them in
        :data:`opis_cli.io.formats.FORMATS`); giving one to another format
        is an error:

        - ``hf_split``: the split of a Hugging Face ``DatasetDict`` folder
          (required when it has several);
        - ``tensor_key``, ``tensor_labels_key``: the embeddings tensor
          (default: the only 2-D float tensor) and the labels tensor
          (default: ``labels``) of a safetensors or PyTorch file;
        - ``dataset_key``, ``dataset_labels_key``: the same for the datasets
          of an HDF5 file (paths such as ``val/emb``).
    owned : bool, default False
        Read a float32 ``.npy`` file into one writeable array of its own
        instead of memory-mapping it. The embeddings are then, for ``.npy``,
        Parquet, ``.npz``, Hugging Face and Lance input, a fresh writeable
        C-contiguous array (float32 when stored as float32 or integers) that
        nothing else refers to, which the caller may hand over to
        ``opis_cli.evaluate(..., copy=False)`` (the CLI does, so that the
        rows are held once); the memory check then counts that array as the
        float32 rows of the run, not as a copy beside them.

    Returns
    -------
    Dataset

    Raises
    ------
    InputError
        One line naming the file (and column/row) and what was expected:
        missing or unreadable file, unknown file type, corrupt file, missing
        or mistyped column, nulls, ragged embedding rows, label count
        mismatch, empty dataset, embeddings not 2-D.
    """
    unknown = sorted(set(format_options) - set(formats.FORMAT_OPTIONS))
    if unknown:
        raise TypeError(f"read_dataset() got an unexpected keyword argument '{unknown[0]}'")
    format_options = {k: v for k, v in format_options.items() if v is not None}
    if options is None:
        options = ReadOptions(labels_path, embedding_column, embedding_columns, label_column,
                              group_column, query_column, gallery_column, format,
                              format_options)
    elif (labels_path, embedding_column, embedding_columns, label_column, group_column,
          query_column, gallery_column, format, format_options) != (
            None, "embedding", None, "label", None, None, None, None, {}):
        raise TypeError("read_dataset: give the read options as ReadOptions or as keywords, "
                        "not both")
    return _read(os.fspath(path), options, progress=progress,
                 check_memory_fits=check_memory_fits, memory_available=memory_available,
                 owned=owned)


def _plan(path_str: str, o: ReadOptions) -> tuple[InputFormat, ColumnSpec, str | None]:
    """The checks made before a reader opens ``path_str`` (the labels file's type, the
    format and its options), and what the reader is asked for: (format, spec, labels
    file). Neither numpy nor pyarrow."""
    label_str = os.fspath(o.labels) if o.labels is not None else None
    if label_str is not None:
        check_suffix(label_str, LABEL_SUFFIXES, "labels file", allow_dir=True)

    fmt = formats.detect(path_str, o.format)
    formats.check_format_options(path_str, fmt, dict(o.format_options))
    spec = ColumnSpec(
        embedding_column=o.embedding_column,
        embedding_pattern=o.embedding_columns,
        label_column=None if label_str is not None else o.label_column,
        group_column=o.group_column,
        query_column=o.query_column,
        gallery_column=o.gallery_column,
        options=o.format_options,
    )
    return fmt, spec, label_str


def check_columns(path: str | os.PathLike[str], options: ReadOptions | None = None) -> None:
    """Fail fast, before numpy and pyarrow load, on what :func:`read_dataset` would
    reject first without reading data: a labels file of an unknown type, an unknown
    format or format option, and, for Parquet, a named column that the (first) file
    does not have (its names read from the footer: ``opis_cli.io.parquet_footer``).

    Raises the reader's own ``InputError`` (the same message), or returns; whatever
    it cannot tell here (a column's type, a file it cannot parse) is left to the reader.
    """
    from ._spec import check_names, embedding_columns, roles
    from .parquet_footer import column_names

    path_str = os.fspath(path)
    o = options or ReadOptions()
    fmt, spec, _ = _plan(path_str, o)
    if fmt.name != "parquet":
        return
    first = parquet_files(path_str)[0]
    names = column_names(first)
    if names is None:
        return
    role_columns = roles(spec, names)
    emb = embedding_columns(first, names, spec, role_columns)
    check_names(first, names, role_columns, emb[0] if spec.embedding_pattern is None else None)


def _read(path_str: str, o: ReadOptions, *, progress: ProgressCallback | None,
          check_memory_fits: bool, memory_available: int | None, owned: bool) -> Dataset:
    """:func:`read_dataset` with its options as one object."""
    from .labels import label_files, read_labels

    fmt, spec, label_str = _plan(path_str, o)
    memory_check = _memory_check(path_str, available=memory_available,
                                 arrow_buffers=fmt.arrow_buffers,
                                 groups=o.group_column is not None,
                                 owned=owned) if check_memory_fits else None
    extra = {"owned": True} if owned and fmt.maps else {}
    cols = fmt.read(path_str, spec, progress=progress, memory_check=memory_check, **extra)

    n = cols.embeddings.shape[0]
    labels = cols.labels
    if label_str is not None:
        labels = read_labels(label_str, o.label_column)
        if labels.shape[0] != n:
            raise InputError(f"{label_str}: {labels.shape[0]} labels for {n} embeddings")
    elif labels is None:
        raise InputError(
            f"{path_str}: this file holds no labels; --labels FILE is required "
            "(a .npy, .txt, .csv or .parquet file with one label per embedding)"
        )

    if progress is not None and not fmt.reports_progress:
        progress(n, n)

    sources = [_source_file(f) for f in cols.files]
    if label_str is not None:
        sources.extend(_source_file(f) for f in label_files(label_str))

    return Dataset(
        embeddings=cols.embeddings,
        labels=labels,
        groups=cols.groups,
        is_query=cols.is_query,
        is_gallery=cols.is_gallery,
        sources=tuple(sources),
    )


def _memory_check(where: str, *, available: int | None, arrow_buffers: bool,
                  groups: bool, owned: bool = False) -> MemoryCheck:
    """The readers' ``memory_check``: the memory model's verdict for the shape read.

    The memory model (``opis_cli.memory``, no numba) is imported on first
    use. When ``available`` is None the system's available memory
    is asked for, and the check is skipped if that is unknown. With
    ``owned``, float32 embeddings as read are handed over and become the
    float32 rows the model counts, so they cost nothing more as stored.
    """

    def check(rows: int, dim: int, stored_itemsize: int) -> None:
        from ..memory import available_memory, check_memory  # no numba

        if owned and stored_itemsize == 4:
            stored_itemsize = 0
        avail = available if available is not None else available_memory()
        if avail is not None:
            check_memory(where, rows, dim, available=avail, stored_itemsize=stored_itemsize,
                         parquet=arrow_buffers, groups=groups)

    return check


def _source_file(path: str) -> SourceFile:
    """Hash and size of one file read."""
    digest = hashlib.sha256()
    size = 0
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(_HASH_CHUNK):
                digest.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise InputError(f"{path}: not readable ({exc.strerror or exc})") from exc
    return SourceFile(path=path, sha256=digest.hexdigest(), size_bytes=size)
