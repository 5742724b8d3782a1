"""Read embeddings, labels and per-row flags from files.

This is the only module that opens input files. It turns Parquet (a file or a
directory of files), ``.npy`` and ``.npz`` inputs, plus an optional separate
labels file, into one :class:`Dataset` and records a sha256 of every file it
read for provenance.

Every problem with the input raises :class:`~opis_cli.errors.InputError` with
a one-line message naming the file (and column and row where there is one) and
what was expected. Row numbers in messages are 0-based and count rows within
the named file.

Only the shape and type of the data are checked here; value checks (NaN or
infinite entries, zero vectors) belong to later stages.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from opis_cli.errors import InputError

__all__ = ["Dataset", "SourceFile", "read_dataset", "read_curves", "read_result"]

ProgressCallback = Callable[[int, int], None]

_HASH_CHUNK = 1 << 20  # 1 MiB
_PARQUET_SUFFIXES = (".parquet", ".pq")
_LABEL_SUFFIXES = (".npy", ".txt", ".csv") + _PARQUET_SUFFIXES
_MAX_LISTED_NAMES = 20
_AUTO_QUERY = "is_query"
_AUTO_GALLERY = "is_gallery"
_NPZ_EMBEDDINGS = "embeddings"
_NPZ_LABELS = "labels"


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
        float32). For ``.npy`` input this is a read-only ``numpy.memmap``.
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


def read_dataset(
    path: str | os.PathLike[str],
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
) -> Dataset:
    """Read a dataset of embeddings and labels.

    Parameters
    ----------
    path : str or os.PathLike
        A Parquet file (``.parquet``/``.pq``), a directory whose ``*.parquet``
        files are read in name order as one dataset, a ``.npy`` file
        (memory-mapped) or a ``.npz`` file.
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
        (.npz), compare :func:`opis_cli.engines.memory.memory_needed` for their shape with
        ``memory_available`` and raise ``InputError`` if it will not fit.
    memory_available : int, optional
        Bytes available; default :func:`opis_cli.engines.memory.available_memory` (the check is
        skipped when that is unknown).

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
    path_str = os.fspath(path)
    label_str = os.fspath(labels_path) if labels_path is not None else None
    if label_str is not None:
        _check_suffix(label_str, _LABEL_SUFFIXES, "labels file", allow_dir=True)

    kind = _input_kind(path_str)

    def fits(where: str, rows: int, dim: int, itemsize: int, in_memory: bool = True) -> None:
        if not check_memory_fits:
            return
        from ..engines.memory import available_memory, check_memory  # no numba

        avail = memory_available if memory_available is not None else available_memory()
        if avail is not None:
            check_memory(where, rows, dim, available=avail,
                         stored_itemsize=itemsize if in_memory else 0,
                         parquet=kind == "parquet", groups=group_column is not None)

    if kind == "parquet":
        files = _parquet_files(path_str)
        table = _read_parquet(
            files,
            display=path_str,
            embedding_column=embedding_column,
            embedding_pattern=embedding_columns,
            label_column=None if label_str is not None else label_column,
            group_column=group_column,
            query_column=query_column,
            gallery_column=gallery_column,
            progress=progress,
            memory_check=lambda rows, dim, itemsize: fits(path_str, rows, dim, itemsize),
        )
        embeddings = table.embeddings
        labels = table.labels
        groups, is_query, is_gallery = table.groups, table.is_query, table.is_gallery
    elif kind == "npy":
        files = [path_str]
        if group_column or query_column or gallery_column:
            raise InputError(
                f"{path_str}: a .npy file holds only embeddings; group, query and "
                "gallery columns need Parquet or .npz input"
            )
        embeddings = _load_npy_embeddings(path_str)
        # memory-mapped: the file's pages are cache the system can drop
        fits(path_str, embeddings.shape[0], embeddings.shape[1], embeddings.itemsize, False)
        labels = groups = is_query = is_gallery = None
    else:  # npz
        files = [path_str]
        embeddings, labels, groups, is_query, is_gallery = _load_npz(
            path_str,
            need_labels=label_str is None,
            group_column=group_column,
            query_column=query_column,
            gallery_column=gallery_column,
        )
        fits(path_str, embeddings.shape[0], embeddings.shape[1], embeddings.itemsize)

    n = embeddings.shape[0]
    if label_str is not None:
        labels = _read_labels_file(label_str, label_column)
        if labels.shape[0] != n:
            raise InputError(f"{label_str}: {labels.shape[0]} labels for {n} embeddings")
    elif labels is None:
        raise InputError(
            f"{path_str}: this file holds no labels; --labels FILE is required "
            "(a .npy, .txt, .csv or .parquet file with one label per embedding)"
        )

    if progress is not None and kind != "parquet":
        progress(n, n)

    sources = [_source_file(f) for f in files]
    if label_str is not None:
        sources.extend(_source_file(f) for f in _label_files(label_str))

    return Dataset(
        embeddings=embeddings,
        labels=labels,
        groups=groups,
        is_query=is_query,
        is_gallery=is_gallery,
        sources=tuple(sources),
    )


# --------------------------------------------------------------------------
# file-level helpers


def _suffix(path: str) -> str:
    return os.path.splitext(path)[1].lower()


def _check_exists(path: str) -> None:
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file or directory")
    if not os.access(path, os.R_OK):
        raise InputError(f"{path}: not readable (permission denied)")


def _check_suffix(path: str, allowed: Sequence[str], what: str, *, allow_dir: bool) -> None:
    _check_exists(path)
    if allow_dir and os.path.isdir(path):
        return
    if os.path.isdir(path):
        raise InputError(f"{path}: is a directory; expected a file")
    if _suffix(path) not in allowed:
        shown = _suffix(path) or "(none)"
        raise InputError(
            f"{path}: unknown {what} type '{shown}'; expected one of "
            + ", ".join(allowed)
            + (" or a directory of .parquet files" if allow_dir else "")
        )


def _input_kind(path: str) -> str:
    _check_exists(path)
    if os.path.isdir(path):
        return "parquet"
    suffix = _suffix(path)
    if suffix in _PARQUET_SUFFIXES:
        return "parquet"
    if suffix == ".npy":
        return "npy"
    if suffix == ".npz":
        return "npz"
    shown = suffix or "(none)"
    raise InputError(
        f"{path}: unknown input file type '{shown}'; expected .parquet, "
        "a directory of .parquet files, .npy or .npz"
    )


def _parquet_files(path: str) -> list[str]:
    """The Parquet files behind ``path``: itself, or a directory's ``*.parquet``."""
    if not os.path.isdir(path):
        return [path]
    try:
        names = sorted(
            name
            for name in os.listdir(path)
            if name.lower().endswith(".parquet") and os.path.isfile(os.path.join(path, name))
        )
    except OSError as exc:
        raise InputError(f"{path}: cannot list directory ({exc.strerror or exc})") from exc
    if not names:
        raise InputError(f"{path}: directory contains no *.parquet files")
    files = [os.path.join(path, name) for name in names]
    for f in files:
        _check_exists(f)
    return files


def _label_files(path: str) -> list[str]:
    return _parquet_files(path) if os.path.isdir(path) else [path]


def _source_file(path: str) -> SourceFile:
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


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 200 else text[:197] + "..."


def _names(names: Sequence[str]) -> str:
    if len(names) <= _MAX_LISTED_NAMES:
        return ", ".join(names)
    shown = ", ".join(names[:_MAX_LISTED_NAMES])
    return f"{shown}, ... ({len(names)} in all)"


@contextmanager
def _arrow_errors(path: str, doing: str) -> Iterator[None]:
    """Turn pyarrow / OS failures while touching ``path`` into one-line InputErrors."""
    try:
        yield
    except InputError:
        raise
    except (pa.ArrowException, OSError, EOFError) as exc:
        raise InputError(f"{path}: {doing} ({_one_line(exc)})") from exc


# --------------------------------------------------------------------------
# Parquet


@dataclass(frozen=True)
class _Table:
    embeddings: np.ndarray
    labels: np.ndarray | None
    groups: np.ndarray | None
    is_query: np.ndarray | None
    is_gallery: np.ndarray | None


_HINTS = {
    "label": "use --label-column",
    "group": "check --group-column",
    "query": "check --query-column",
    "gallery": "check --gallery-column",
    "embedding": (
        "use --embedding-column, or --embedding-columns 'PATTERN' for one column per dimension"
    ),
}


def _numeric_dtype(t: pa.DataType) -> np.dtype | None:
    """The NumPy dtype an Arrow numeric type is read as, or None if not numeric."""
    if pa.types.is_float16(t):
        return np.dtype(np.float16)
    if pa.types.is_float32(t):
        return np.dtype(np.float32)
    if pa.types.is_float64(t):
        return np.dtype(np.float64)
    if pa.types.is_integer(t):
        return np.dtype(np.float32)
    return None


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _is_label_type(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        return _is_label_type(t.value_type)
    return not (pa.types.is_nested(t) or pa.types.is_null(t))


def _is_flag_type(t: pa.DataType) -> bool:
    return pa.types.is_boolean(t) or pa.types.is_integer(t)


def _read_parquet(
    files: list[str],
    *,
    display: str,
    embedding_column: str | None,
    embedding_pattern: str | None,
    label_column: str | None,
    group_column: str | None,
    query_column: str | None,
    gallery_column: str | None,
    progress: ProgressCallback | None,
    want_embeddings: bool = True,
    memory_check: Callable[[int, int, int], None] | None = None,
) -> _Table:
    """Read the role columns of one or more Parquet files, row group by row group.

    The embedding matrix is allocated once (dtype from the schemas, D from the
    schema or the first row) and filled in place, so peak memory is the
    result plus one row group.
    """
    handles: list[pq.ParquetFile] = []
    try:
        for f in files:
            with _arrow_errors(f, "not a Parquet file or corrupt"):
                handles.append(pq.ParquetFile(f))
        return _read_parquet_handles(
            files,
            handles,
            display=display,
            embedding_column=embedding_column,
            embedding_pattern=embedding_pattern,
            label_column=label_column,
            group_column=group_column,
            query_column=query_column,
            gallery_column=gallery_column,
            progress=progress,
            want_embeddings=want_embeddings,
            memory_check=memory_check,
        )
    finally:
        for h in handles:
            try:
                h.close()
            except Exception:  # closing is best effort; the data is already read
                pass
        # hand Arrow's cached row-group buffers back to the system before the
        # engine allocates its blocks
        pa.default_memory_pool().release_unused()


def _read_parquet_handles(
    files: list[str],
    handles: list[pq.ParquetFile],
    *,
    display: str,
    embedding_column: str | None,
    embedding_pattern: str | None,
    label_column: str | None,
    group_column: str | None,
    query_column: str | None,
    gallery_column: str | None,
    progress: ProgressCallback | None,
    want_embeddings: bool,
    memory_check: Callable[[int, int, int], None] | None = None,
) -> _Table:
    schemas = []
    for f, h in zip(files, handles, strict=True):
        with _arrow_errors(f, "cannot read Parquet schema"):
            schemas.append(h.schema_arrow)
    first_names = list(schemas[0].names)

    # Role columns, decided from the first file; every file must then have them.
    roles: dict[str, str] = {}
    if label_column is not None:
        roles["label"] = label_column
    if group_column is not None:
        roles["group"] = group_column
    if query_column is not None:
        roles["query"] = query_column
    elif _AUTO_QUERY in first_names:
        roles["query"] = _AUTO_QUERY
    if gallery_column is not None:
        roles["gallery"] = gallery_column
    elif _AUTO_GALLERY in first_names:
        roles["gallery"] = _AUTO_GALLERY

    emb_cols: list[str] = []
    if want_embeddings:
        if embedding_pattern is not None:
            role_names = set(roles.values())
            emb_cols = [
                c
                for c in first_names
                if fnmatch.fnmatchcase(c, embedding_pattern) and c not in role_names
            ]
            if not emb_cols:
                raise InputError(
                    f"{files[0]}: no columns match '{embedding_pattern}'; columns are: "
                    f"{_names(first_names)} (use --embedding-columns)"
                )
        else:
            assert embedding_column is not None
            emb_cols = [embedding_column]

    emb_dtypes: list[np.dtype] = []
    fixed_dim: int | None = None
    for f, schema in zip(files, schemas, strict=True):
        names = list(schema.names)
        for role, col in roles.items():
            if col not in names:
                raise InputError(
                    f"{f}: no column '{col}'; columns are: {_names(names)} ({_HINTS[role]})"
                )
            t = schema.field(col).type
            if role in ("query", "gallery"):
                if not _is_flag_type(t):
                    raise InputError(
                        f"{f}: column '{col}' has type {t}; expected boolean (or 0/1 integers)"
                    )
            elif not _is_label_type(t):
                raise InputError(
                    f"{f}: column '{col}' has type {t}; "
                    "expected scalar values (string, integer, ...)"
                )
        if not want_embeddings:
            continue
        if embedding_pattern is not None:
            matched = [
                c
                for c in names
                if fnmatch.fnmatchcase(c, embedding_pattern) and c not in set(roles.values())
            ]
            if matched != emb_cols:
                raise InputError(
                    f"{f}: columns matching '{embedding_pattern}' are {_names(matched) or 'none'}; "
                    f"expected {_names(emb_cols)} as in {files[0]}"
                )
            for c in emb_cols:
                t = schema.field(c).type
                dt = _numeric_dtype(t)
                if dt is None:
                    raise InputError(
                        f"{f}: column '{c}' has type {t}; expected numbers (float or integer)"
                    )
                emb_dtypes.append(dt)
        else:
            col = emb_cols[0]
            if col not in names:
                raise InputError(
                    f"{f}: no column '{col}'; columns are: {_names(names)} ({_HINTS['embedding']})"
                )
            t = schema.field(col).type
            if not _is_list(t):
                raise InputError(
                    f"{f}: column '{col}' has type {t}; expected a list of numbers per row "
                    "(or use --embedding-columns 'PATTERN' for one column per dimension)"
                )
            dt = _numeric_dtype(t.value_type)
            if dt is None:
                raise InputError(
                    f"{f}: column '{col}' holds lists of {t.value_type}; expected lists of "
                    "numbers (float or integer)"
                )
            emb_dtypes.append(dt)
            if pa.types.is_fixed_size_list(t):
                if fixed_dim is not None and t.list_size != fixed_dim:
                    raise InputError(
                        f"{f}: column '{col}' has {t.list_size} values per row, expected "
                        f"{fixed_dim} as in {files[0]}"
                    )
                fixed_dim = t.list_size

    rows_total = 0
    for f, h in zip(files, handles, strict=True):
        with _arrow_errors(f, "cannot read Parquet metadata"):
            rows_total += h.metadata.num_rows
    if rows_total == 0:
        raise InputError(f"{display}: the dataset has 0 rows; expected at least one")

    out_dtype = np.result_type(*emb_dtypes) if emb_dtypes else None
    dim: int | None = None
    if want_embeddings and embedding_pattern is not None:
        dim = len(emb_cols)
    elif fixed_dim is not None:
        dim = fixed_dim
    if dim == 0:
        raise InputError(
            f"{files[0]}: column '{emb_cols[0]}' has 0 values per row; expected at least one"
        )
    out: np.ndarray | None = None
    if dim is not None and out_dtype is not None:
        if memory_check is not None:
            memory_check(rows_total, dim, out_dtype.itemsize)
        out = np.empty((rows_total, dim), dtype=out_dtype)

    labels_parts: list[np.ndarray] = []
    group_parts: list[np.ndarray] = []
    query_parts: list[np.ndarray] = []
    gallery_parts: list[np.ndarray] = []
    projection = list(dict.fromkeys(emb_cols + list(roles.values())))

    done = 0
    for f, h in zip(files, handles, strict=True):
        file_row = 0
        with _arrow_errors(f, "cannot read Parquet data (corrupt file?)"):
            n_groups = h.num_row_groups
            for g in range(n_groups):
                tbl = h.read_row_group(g, columns=projection)
                n = tbl.num_rows
                if n == 0:
                    continue
                if done + n > rows_total:
                    raise InputError(
                        f"{f}: holds more rows than its metadata says ({rows_total} in all)"
                    )
                if want_embeddings:
                    if embedding_pattern is not None:
                        assert out is not None
                        for j, c in enumerate(emb_cols):
                            _fill_scalar_column(
                                out[done : done + n, j], tbl.column(c), f, c, file_row
                            )
                    else:
                        block, dim = _list_column_to_numpy(
                            tbl.column(emb_cols[0]), f, emb_cols[0], file_row, dim
                        )
                        if out is None:
                            if dim == 0:
                                raise InputError(
                                    f"{f}: column '{emb_cols[0]}' row {file_row} has 0 values; "
                                    "expected at least one"
                                )
                            if memory_check is not None:
                                memory_check(rows_total, dim, out_dtype.itemsize)
                            out = np.empty((rows_total, dim), dtype=out_dtype)
                        out[done : done + n] = block
                for role, parts in (
                    ("label", labels_parts),
                    ("group", group_parts),
                ):
                    if role in roles:
                        parts.append(
                            _strings_from_arrow(tbl.column(roles[role]), f, roles[role], file_row)
                        )
                for role, parts in (("query", query_parts), ("gallery", gallery_parts)):
                    if role in roles:
                        parts.append(
                            _flags_from_arrow(tbl.column(roles[role]), f, roles[role], file_row)
                        )
                file_row += n
                done += n
                if progress is not None:
                    progress(done, rows_total)

    if done == 0:
        raise InputError(f"{display}: the dataset has 0 rows; expected at least one")
    if want_embeddings:
        assert out is not None
        embeddings = out if done == rows_total else out[:done]
    else:
        embeddings = np.empty((done, 0), dtype=np.float32)

    def cat(parts: list[np.ndarray]) -> np.ndarray | None:
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    return _Table(
        embeddings=embeddings,
        labels=cat(labels_parts),
        groups=cat(group_parts),
        is_query=cat(query_parts),
        is_gallery=cat(gallery_parts),
    )


def _list_column_to_numpy(
    col: pa.ChunkedArray, path: str, name: str, row_base: int, dim: int | None
) -> tuple[np.ndarray, int]:
    """Convert a list-typed column to an (n, D) array via the flat values buffer.

    Returns the block and D (taken from the first row when ``dim`` is None).
    """
    blocks: list[np.ndarray] = []
    row = row_base
    for chunk in col.chunks:
        n = len(chunk)
        if n == 0:
            continue
        if chunk.null_count:
            bad = int(np.flatnonzero(chunk.is_null().to_numpy(zero_copy_only=False))[0])
            raise InputError(
                f"{path}: column '{name}' row {row + bad} is null; expected a list of numbers"
            )
        if pa.types.is_fixed_size_list(chunk.type):
            size = chunk.type.list_size
            if dim is None:
                dim = size
            if size != dim:
                raise InputError(
                    f"{path}: column '{name}' row {row} has {size} values, expected {dim} "
                    "(rows must all have the same length)"
                )
            values = chunk.flatten()
            offsets = None
        else:
            offsets = chunk.offsets.to_numpy()
            lengths = np.diff(offsets)
            if dim is None:
                dim = int(lengths[0])
            bad_rows = np.flatnonzero(lengths != dim)
            if bad_rows.size:
                bad = int(bad_rows[0])
                raise InputError(
                    f"{path}: column '{name}' row {row + bad} has {int(lengths[bad])} values, "
                    f"expected {dim} (rows must all have the same length)"
                )
            values = chunk.flatten()
        if values.null_count:
            idx = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
            bad = idx // dim if dim else 0
            raise InputError(
                f"{path}: column '{name}' row {row + bad} contains a null value; expected numbers"
            )
        flat = values.to_numpy(zero_copy_only=False)
        blocks.append(flat.reshape(n, dim))
        row += n
    assert dim is not None
    if len(blocks) == 1:
        return blocks[0], dim
    return np.concatenate(blocks), dim


def _fill_scalar_column(
    dest: np.ndarray, col: pa.ChunkedArray, path: str, name: str, row_base: int
) -> None:
    """Copy one numeric scalar column into a (strided) column of the output."""
    pos = 0
    for chunk in col.chunks:
        n = len(chunk)
        if n == 0:
            continue
        if chunk.null_count:
            bad = int(np.flatnonzero(chunk.is_null().to_numpy(zero_copy_only=False))[0])
            raise InputError(
                f"{path}: column '{name}' row {row_base + pos + bad} is null; expected a number"
            )
        dest[pos : pos + n] = chunk.to_numpy(zero_copy_only=False)
        pos += n


def _first_null(chunk: pa.Array) -> int:
    return int(np.flatnonzero(chunk.is_null().to_numpy(zero_copy_only=False))[0])


def _strings_from_arrow(col: pa.ChunkedArray, path: str, name: str, row_base: int) -> np.ndarray:
    """Any scalar column -> object array of Python ``str`` (nulls and NaN are errors)."""
    parts: list[np.ndarray] = []
    row = row_base
    for chunk in col.chunks:
        n = len(chunk)
        if n == 0:
            continue
        if chunk.null_count:
            raise InputError(
                f"{path}: column '{name}' row {row + _first_null(chunk)} is null; "
                "expected a value in every row"
            )
        if pa.types.is_dictionary(chunk.type):
            chunk = chunk.dictionary_decode()
        t = chunk.type
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            arr = chunk.to_numpy(zero_copy_only=False)
        elif pa.types.is_integer(t):
            # Arrow's integer -> string cast equals Python's str(int) and is much faster.
            arr = pc.cast(chunk, pa.string()).to_numpy(zero_copy_only=False)
        elif (
            pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t)
        ):
            try:
                arr = np.array([v.decode("utf-8") for v in chunk.to_pylist()], dtype=object)
            except UnicodeDecodeError as exc:
                raise InputError(
                    f"{path}: column '{name}' holds bytes that are not UTF-8 text"
                ) from exc
        else:
            values = chunk.to_pylist()
            for i, v in enumerate(values):
                if isinstance(v, float) and v != v:
                    raise InputError(
                        f"{path}: column '{name}' row {row + i} is NaN; "
                        "expected a value in every row"
                    )
            arr = np.array([str(v) for v in values], dtype=object)
        parts.append(arr)
        row += n
    if not parts:
        return np.empty(0, dtype=object)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _flags_from_arrow(col: pa.ChunkedArray, path: str, name: str, row_base: int) -> np.ndarray:
    """A boolean or 0/1 integer column -> bool array (nulls are errors)."""
    parts: list[np.ndarray] = []
    row = row_base
    for chunk in col.chunks:
        n = len(chunk)
        if n == 0:
            continue
        if chunk.null_count:
            raise InputError(
                f"{path}: column '{name}' row {row + _first_null(chunk)} is null; "
                "expected true/false"
            )
        parts.append(
            _flags_from_numpy(chunk.to_numpy(zero_copy_only=False), path, f"column '{name}'", row)
        )
        row += n
    if not parts:
        return np.empty(0, dtype=bool)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


# --------------------------------------------------------------------------
# NumPy files


def _flags_from_numpy(arr: np.ndarray, path: str, what: str, row_base: int = 0) -> np.ndarray:
    if arr.dtype == np.bool_:
        return np.asarray(arr)
    if arr.dtype.kind in "iu":
        bad = np.flatnonzero((arr != 0) & (arr != 1))
        if bad.size:
            i = int(bad[0])
            raise InputError(
                f"{path}: {what} row {row_base + i} has value {arr[i]}; expected true/false or 0/1"
            )
        return arr.astype(bool)
    raise InputError(f"{path}: {what} has type {arr.dtype}; expected boolean (or 0/1 integers)")


def _strings_from_numpy(arr: np.ndarray, path: str, what: str) -> np.ndarray:
    """A 1-D array of labels -> object array of Python ``str``."""
    if arr.ndim != 1:
        raise InputError(
            f"{path}: {what} has shape {arr.shape}; expected a 1-D array (one value per row)"
        )
    kind = arr.dtype.kind
    if kind == "U":
        return arr.astype(object)
    if kind == "S":
        try:
            return np.array([v.decode("utf-8") for v in arr.tolist()], dtype=object)
        except UnicodeDecodeError as exc:
            raise InputError(f"{path}: {what} holds bytes that are not UTF-8 text") from exc
    if kind == "f":
        nan = np.flatnonzero(np.isnan(arr))
        if nan.size:
            raise InputError(
                f"{path}: {what} row {int(nan[0])} is NaN; expected a value in every row"
            )
    if kind in "biuf":
        # Python's str() of the scalar, so 3 -> "3" and 3.0 -> "3.0" as in Parquet input.
        return np.array([str(v) for v in arr.tolist()], dtype=object)
    raise InputError(f"{path}: {what} has type {arr.dtype}; expected strings or numbers")


def _check_embeddings(arr: np.ndarray, path: str, what: str) -> np.ndarray:
    if arr.ndim != 2:
        raise InputError(
            f"{path}: {what} has shape {arr.shape}; expected a 2-D array (rows x dimensions)"
        )
    kind = arr.dtype.kind
    if kind == "f" and arr.dtype.itemsize in (2, 4, 8):
        pass
    elif kind in "iu":
        arr = arr.astype(np.float32)
    else:
        raise InputError(
            f"{path}: {what} has type {arr.dtype}; expected numbers (float or integer)"
        )
    if arr.shape[0] == 0:
        raise InputError(f"{path}: {what} has 0 rows; expected at least one")
    if arr.shape[1] == 0:
        raise InputError(f"{path}: {what} has 0 dimensions; expected at least one")
    return arr


def _load_npy_embeddings(path: str) -> np.ndarray:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{path}: not a valid .npy array of numbers ({_one_line(exc)})") from exc
    return _check_embeddings(arr, path, "embeddings")


def _load_npz(
    path: str,
    *,
    need_labels: bool,
    group_column: str | None,
    query_column: str | None,
    gallery_column: str | None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    try:
        with np.load(path, allow_pickle=False) as z:
            names = list(z.files)
            if _NPZ_EMBEDDINGS in names:
                emb_name = _NPZ_EMBEDDINGS
            else:
                not_embeddings = {_NPZ_LABELS, _AUTO_QUERY, _AUTO_GALLERY}
                not_embeddings |= {group_column, query_column, gallery_column} - {None}
                others = [n for n in names if n not in not_embeddings]
                if len(others) != 1:
                    raise InputError(
                        f"{path}: no array named 'embeddings' and not exactly one other array; "
                        f"arrays are: {_names(names) or 'none'}"
                    )
                emb_name = others[0]
            embeddings = _check_embeddings(z[emb_name], path, f"array '{emb_name}'")
            n = embeddings.shape[0]

            def column(name: str, required: bool) -> np.ndarray | None:
                if name not in names:
                    if required:
                        raise InputError(f"{path}: no array '{name}'; arrays are: {_names(names)}")
                    return None
                arr = z[name]
                if arr.ndim != 1 or arr.shape[0] != n:
                    raise InputError(
                        f"{path}: array '{name}' has shape {arr.shape}; "
                        f"expected ({n},), one value per embedding"
                    )
                return arr

            labels = None
            if need_labels:
                raw = column(_NPZ_LABELS, required=False)
                if raw is None:
                    raise InputError(
                        f"{path}: no 'labels' array (arrays are: {_names(names)}); "
                        "--labels FILE is required"
                    )
                labels = _strings_from_numpy(raw, path, "array 'labels'")
            groups = None
            if group_column is not None:
                raw = column(group_column, required=True)
                groups = _strings_from_numpy(raw, path, f"array '{group_column}'")
            flags: list[np.ndarray | None] = []
            for given, auto in ((query_column, _AUTO_QUERY), (gallery_column, _AUTO_GALLERY)):
                name = given if given is not None else auto
                raw = column(name, required=given is not None)
                flags.append(
                    None if raw is None else _flags_from_numpy(raw, path, f"array '{name}'")
                )
    except InputError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path}: not a valid .npz file of arrays ({_one_line(exc)})") from exc
    return embeddings, labels, groups, flags[0], flags[1]


# --------------------------------------------------------------------------
# Separate labels file


def _read_labels_file(path: str, label_column: str) -> np.ndarray:
    if os.path.isdir(path) or _suffix(path) in _PARQUET_SUFFIXES:
        table = _read_parquet(
            _parquet_files(path),
            display=path,
            embedding_column=None,
            embedding_pattern=None,
            label_column=label_column,
            group_column=None,
            query_column=None,
            gallery_column=None,
            progress=None,
            want_embeddings=False,
        )
        assert table.labels is not None
        return table.labels
    suffix = _suffix(path)
    if suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise InputError(
                f"{path}: not a valid .npy array of labels ({_one_line(exc)}); "
                "save labels as a string or integer array"
            ) from exc
        return _strings_from_numpy(arr, path, "labels")
    if suffix == ".txt":
        return _read_labels_txt(path)
    return _read_labels_csv(path, label_column)


def _read_labels_txt(path: str) -> np.ndarray:
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
    lines = text.split("\n")
    # Keep "\r" handling explicit: a CRLF file's labels must not end in "\r".
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    while lines and lines[-1] == "":
        lines.pop()
    empty = [i for i, line in enumerate(lines) if line == ""]
    if empty:
        raise InputError(f"{path}: line {empty[0] + 1} is empty; expected one label per line")
    return np.array(lines, dtype=object)


def _read_labels_csv(path: str, label_column: str) -> np.ndarray:
    import pyarrow.csv as pacsv

    with _arrow_errors(path, "not a readable CSV file"):
        reader = pacsv.open_csv(path)
        names = list(reader.schema.names)
        reader.close()
        if label_column not in names:
            raise InputError(
                f"{path}: no column '{label_column}'; columns are: {_names(names)} "
                f"({_HINTS['label']})"
            )
        # Labels are kept as the literal text ("007" stays "007"); only an
        # empty cell counts as missing.
        table = pacsv.read_csv(
            path,
            convert_options=pacsv.ConvertOptions(
                include_columns=[label_column],
                column_types={label_column: pa.string()},
                strings_can_be_null=True,
                null_values=[""],
            ),
        )
    col = table.column(label_column)
    if col.null_count:
        bad = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
        raise InputError(
            f"{path}: column '{label_column}' row {bad} is empty; expected a label in every row"
        )
    return _strings_from_arrow(col, path, label_column, 0)


# --------------------------------------------------------------------------
# Saved results (for ``opis report``): the result JSON and the curves table

_CURVES_REQUIRED = ("level", "label", "threshold_index", "threshold", "utility")
_CURVES_SUFFIXES = (".csv", ".txt") + _PARQUET_SUFFIXES


def read_result(path: str | os.PathLike[str]):
    """Read a result document written by ``opis evaluate --json``.

    Returns
    -------
    EvaluationResult
        Without per-class curves (they are not part of the JSON; see
        :func:`read_curves`).

    Raises
    ------
    InputError
        Missing or unreadable file, invalid JSON, or not an opis result
        document of a supported ``schema_version``.
    """
    import json

    from opis_cli.results import EvaluationResult

    path_str = os.fspath(path)
    _check_suffix(path_str, (".json",), "result file", allow_dir=False)
    try:
        with open(path_str, encoding="utf-8") as fh:
            doc = json.load(fh)
    except UnicodeDecodeError as exc:
        raise InputError(f"{path_str}: not UTF-8 text (byte {exc.start}); expected the JSON "
                         "written by opis evaluate --json") from exc
    except json.JSONDecodeError as exc:
        raise InputError(f"{path_str}: not valid JSON (line {exc.lineno} column {exc.colno}: "
                         f"{exc.msg})") from exc
    except OSError as exc:
        raise InputError(f"{path_str}: not readable ({exc.strerror or exc})") from exc
    if not isinstance(doc, dict) or "schema_version" not in doc:
        raise InputError(f"{path_str}: not an opis result document (no 'schema_version'); "
                         "expected the JSON written by opis evaluate --json")
    try:
        return EvaluationResult.from_dict(doc)
    except ValueError as exc:
        raise InputError(f"{path_str}: {_one_line(exc)}") from exc
    except (KeyError, TypeError, IndexError, AttributeError) as exc:
        what = f"key {exc.args[0]!r} is missing" if isinstance(exc, KeyError) else _one_line(exc)
        raise InputError(f"{path_str}: not a complete opis result document ({what})") from exc


def read_curves(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read a per-class curves table written by ``opis evaluate --curves``.

    Parameters
    ----------
    path : str or os.PathLike
        ``.parquet``/``.pq`` or ``.csv`` (as written by the ``--curves``
        option: one row per class (and group) and threshold).

    Returns
    -------
    dict of str to numpy.ndarray
        Every column of the table. ``level`` and ``label`` are object arrays
        of ``str`` (a CSV label such as ``007`` stays ``"007"``); the numeric
        columns (``threshold_index``, ``threshold``, ``utility``, and
        ``tp``, ``fp``, ``positives``, ``negatives``, ``tpr``, ``far`` when
        present) are int64 or float64.

    Raises
    ------
    InputError
        Missing file, unknown type, unreadable table, a missing or
        non-numeric column, or an empty cell in a required column.
    """
    path_str = os.fspath(path)
    _check_suffix(path_str, _CURVES_SUFFIXES, "curves table", allow_dir=False)
    if _suffix(path_str) in _PARQUET_SUFFIXES:
        with _arrow_errors(path_str, "not a Parquet file or corrupt"):
            table = pq.read_table(path_str)
    else:
        import pyarrow.csv as pacsv

        with _arrow_errors(path_str, "not a readable CSV file"):
            table = pacsv.read_csv(
                path_str,
                convert_options=pacsv.ConvertOptions(
                    column_types={"level": pa.string(), "label": pa.string()},
                    strings_can_be_null=False,
                ),
            )
    names = list(table.column_names)
    missing = [c for c in _CURVES_REQUIRED if c not in names]
    if missing:
        raise InputError(
            f"{path_str}: no column '{missing[0]}'; columns are: {_names(names) or 'none'} "
            "(expected the table written by opis evaluate --curves)"
        )
    out: dict[str, np.ndarray] = {}
    for name in names:
        col = table.column(name)
        if name in ("level", "label"):
            out[name] = _strings_from_arrow(col, path_str, name, 0)
            continue
        if col.null_count and name in _CURVES_REQUIRED:
            bad = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
            raise InputError(f"{path_str}: column '{name}' row {bad} is empty; expected a number")
        t = col.type
        if pa.types.is_integer(t) and not col.null_count:
            out[name] = col.to_numpy().astype(np.int64, copy=False)
        elif pa.types.is_integer(t) or pa.types.is_floating(t):
            out[name] = col.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
        elif name in _CURVES_REQUIRED:
            raise InputError(f"{path_str}: column '{name}' has type {t}; expected numbers")
    return out
