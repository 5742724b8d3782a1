"""The Parquet reader: one file, or a directory of ``*.parquet`` files read as one.

Owns the Parquet-specific steps, each a function below:

1. :func:`parquet_files` -- the files behind a path;
2. :func:`_resolve_columns` -- from the schemas, which column plays which role
   (label, group, query, gallery) and which hold the embeddings, checked in
   every file, and the dtype and (when the schema says) the dimension of
   the embedding matrix;
3. :func:`_count_rows` -- the row count from the metadata, so that the
   :class:`_Sink` can run the memory check and allocate the matrix once
   (:meth:`_Sink._allocate`);
4. :func:`_read_row_groups` -- one row group at a time, each in batches of
   at most :data:`BATCH_BYTES` of embeddings, with progress;
5. :meth:`_Sink.finish` -- concatenation into the :class:`Columns`.

The embedding matrix is one owned, writeable, C-contiguous array allocated
once (float32 when the file stores float32 or integers), so the caller may
hand it over to :func:`opis_cli.evaluate` with ``copy=False``. Peak memory is
the result plus one batch (a file written as one row group of a million rows
is not decoded whole).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from opis_cli.errors import InputError

from ._columns import (
    Columns,
    ColumnSpec,
    MemoryCheck,
    ProgressCallback,
    fill_scalar_column,
    flags_from_arrow,
    is_flag_type,
    is_label_type,
    is_list,
    list_column_to_numpy,
    numeric_dtype,
    strings_from_arrow,
)
from ._files import arrow_errors, list_names, parquet_files
from ._spec import check_names, embedding_columns, matching, roles as _roles

__all__ = ["read", "read_files", "read_arrow", "parquet_files"]

#: The embeddings decoded at once while reading a row group (about 32 MiB:
#: 21,845 rows at D = 384 float32); results do not depend on it.
BATCH_BYTES = 32 * 2**20
#: Rows per batch when D is not in the schema (a variable-length list column).
_BATCH_ROWS_UNKNOWN_DIM = 16_384
#: Bytes of a column chunk read from the file at once. With Arrow's defaults
#: (``pre_buffer``, no stream buffer) a row group's column chunk is read whole
#: before its first batch is decoded: 1.4 GiB for a million rows of 384
#: float32 written as one row group (measured: peak 3.2x the embeddings).
_READ_BUFFER = 8 * 2**20


def read(
    path: str,
    spec: ColumnSpec,
    *,
    progress: ProgressCallback | None = None,
    memory_check: MemoryCheck | None = None,
) -> Columns:
    """Read a Parquet file or directory (the format reader of ``read_dataset``).

    Parameters
    ----------
    path : str
        A ``.parquet``/``.pq`` file or a directory of ``*.parquet`` files.
    spec : ColumnSpec
        The columns to read.
    progress : callable, optional
        ``progress(rows_done, rows_total)`` after each row group.
    memory_check : callable, optional
        Called once with the matrix's shape and itemsize before it is
        allocated.
    """
    return read_files(parquet_files(path), spec, display=path, progress=progress,
                      memory_check=memory_check)


def read_files(
    files: Sequence[str],
    spec: ColumnSpec,
    *,
    display: str,
    progress: ProgressCallback | None = None,
    memory_check: MemoryCheck | None = None,
    want_embeddings: bool = True,
) -> Columns:
    """Read the role columns of one or more Parquet files as one table, row group by row group.

    Parameters
    ----------
    files : sequence of str
        Read in this order; the first file's schema decides the columns.
    spec : ColumnSpec
        The columns to read.
    display : str
        The path as given, for messages about the whole dataset.
    progress, memory_check
        As in :func:`read`.
    want_embeddings : bool, default True
        False reads only the role columns (a labels file); the embeddings
        are then an (N, 0) array.
    """
    files = list(files)
    handles: list[pq.ParquetFile] = []
    try:
        for f in files:
            with arrow_errors(f, "not a Parquet file or corrupt"):
                handles.append(pq.ParquetFile(f, pre_buffer=False, buffer_size=_READ_BUFFER))
        schemas = []
        for f, h in zip(files, handles, strict=True):
            with arrow_errors(f, "cannot read Parquet schema"):
                schemas.append(h.schema_arrow)
        layout = _resolve_columns(files, schemas, spec, want_embeddings)
        rows_total = _count_rows(files, handles, display)
        if layout.dim == 0:  # a fixed_size_list of size 0 (checked after the row count)
            raise InputError(f"{files[0]}: column '{layout.embedding_columns[0]}' has 0 values "
                             "per row; expected at least one")
        sink = _Sink(layout, rows_total, memory_check)
        _read_row_groups(files, handles, layout, sink, progress)
        return sink.finish(display, files)
    finally:
        for h in handles:
            try:
                h.close()
            except Exception:  # closing is best effort; the data is already read
                pass
        # hand Arrow's cached row-group buffers back to the system before the
        # engine allocates its blocks
        pa.default_memory_pool().release_unused()


def read_arrow(
    display: str,
    schema: pa.Schema,
    rows_total: int,
    batches: Callable[[list[str]], Iterable[pa.Table | pa.RecordBatch]],
    spec: ColumnSpec,
    *,
    files: Sequence[str],
    progress: ProgressCallback | None = None,
    memory_check: MemoryCheck | None = None,
) -> Columns:
    """Read the role columns of any Arrow table source with the Parquet reader's rules.

    The readers of Arrow-backed formats (a Hugging Face dataset, a Lance
    dataset) use it: the same column options, conversions, checks and
    messages as Parquet, with ``display`` as the file named in messages.

    Parameters
    ----------
    display : str
        The input as given, named in every message (rows count from its first).
    schema : pyarrow.Schema
        The columns available.
    rows_total : int
        The row count (for the memory check and the one allocation).
    batches : callable
        ``batches(columns)`` yields the rows in order as tables or record
        batches holding at least ``columns``.
    spec : ColumnSpec
        The columns to read.
    files : sequence of str
        The files behind the input, for provenance.
    progress, memory_check
        As in :func:`read`.
    """
    layout = _resolve_columns([display], [schema], spec, want_embeddings=True)
    if rows_total == 0:
        raise InputError(f"{display}: the dataset has 0 rows; expected at least one")
    if layout.dim == 0:
        raise InputError(f"{display}: column '{layout.embedding_columns[0]}' has 0 values "
                         "per row; expected at least one")
    sink = _Sink(layout, rows_total, memory_check)
    for batch in batches(layout.projection):
        tbl = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        if tbl.num_rows == 0:
            continue
        sink.add(tbl, display, sink.done)
        if progress is not None:
            progress(sink.done, sink.rows_total)
    columns = sink.finish(display, [display])
    return dataclasses.replace(columns, files=tuple(files))


# --------------------------------------------------------------------------
# 2. schema: which column plays which role


@dataclass(frozen=True)
class _Layout:
    """The columns to read, as resolved from the schemas.

    Attributes
    ----------
    roles : dict of str to str
        Role (``label``, ``group``, ``query``, ``gallery``) -> column name,
        in that order.
    embedding_columns : tuple of str
        One list column, or one scalar column per dimension (``per_dimension``);
        empty when embeddings are not read.
    per_dimension : bool
        The embeddings come from ``embedding_pattern``.
    dtype : numpy.dtype or None
        The embedding matrix's dtype (all files' dtypes promoted).
    dim : int or None
        D when the schema fixes it (pattern, fixed_size_list; 0 is an error
        raised by the caller); else it is taken from the first row.
    """

    roles: dict[str, str]
    embedding_columns: tuple[str, ...]
    per_dimension: bool
    dtype: np.dtype | None
    dim: int | None

    @property
    def projection(self) -> list[str]:
        """The columns read from each row group, without repeats."""
        return list(dict.fromkeys(list(self.embedding_columns) + list(self.roles.values())))


def _resolve_columns(
    files: list[str], schemas: list[pa.Schema], spec: ColumnSpec, want_embeddings: bool
) -> _Layout:
    """Decide the role and embedding columns from the first schema; check them in every one.

    Raises
    ------
    InputError
        A missing column, a column of the wrong type, or embedding columns
        that differ between files.
    """
    first_names = list(schemas[0].names)
    roles = _roles(spec, first_names)
    pattern = spec.embedding_pattern if want_embeddings else None
    emb_cols = (embedding_columns(files[0], first_names, spec, roles) if want_embeddings
                else [])
    list_column = emb_cols[0] if want_embeddings and pattern is None else None

    emb_dtypes: list[np.dtype] = []
    fixed_dim: int | None = None
    for f, schema in zip(files, schemas, strict=True):
        # every named column first (opis_cli.io._spec, which opis evaluate also runs on
        # the footer before loading pyarrow), then their types
        check_names(f, list(schema.names), roles, list_column)
        _check_roles(f, schema, roles)
        if not want_embeddings:
            continue
        if pattern is not None:
            emb_dtypes.extend(_per_dimension_dtypes(f, schema, pattern, roles, emb_cols, files[0]))
        else:
            dt, size = _list_dtype(f, schema, emb_cols[0])
            emb_dtypes.append(dt)
            if size is not None:
                if fixed_dim is not None and size != fixed_dim:
                    raise InputError(
                        f"{f}: column '{emb_cols[0]}' has {size} values per row, expected "
                        f"{fixed_dim} as in {files[0]}"
                    )
                fixed_dim = size

    dim: int | None = None
    if want_embeddings and pattern is not None:
        dim = len(emb_cols)
    elif fixed_dim is not None:
        dim = fixed_dim
    return _Layout(
        roles=roles,
        embedding_columns=tuple(emb_cols),
        per_dimension=pattern is not None,
        dtype=np.result_type(*emb_dtypes) if emb_dtypes else None,
        dim=dim,
    )


def _check_roles(path: str, schema: pa.Schema, roles: dict[str, str]) -> None:
    """The role columns' types (present: :func:`check_names`): flags boolean/integer,
    the others scalar."""
    for role, col in roles.items():
        t = schema.field(col).type
        if role in ("query", "gallery"):
            if not is_flag_type(t):
                raise InputError(
                    f"{path}: column '{col}' has type {t}; expected boolean (or 0/1 integers)"
                )
        elif not is_label_type(t):
            raise InputError(
                f"{path}: column '{col}' has type {t}; "
                "expected scalar values (string, integer, ...)"
            )


def _per_dimension_dtypes(path: str, schema: pa.Schema, pattern: str, roles: dict[str, str],
                          expected: list[str], first: str) -> list[np.dtype]:
    """dtypes of the one-column-per-dimension embeddings; the same columns as ``first``."""
    matched = matching(list(schema.names), pattern, roles)
    if matched != expected:
        raise InputError(
            f"{path}: columns matching '{pattern}' are {list_names(matched) or 'none'}; "
            f"expected {list_names(expected)} as in {first}"
        )
    dtypes = []
    for c in expected:
        t = schema.field(c).type
        dt = numeric_dtype(t)
        if dt is None:
            raise InputError(
                f"{path}: column '{c}' has type {t}; expected numbers (float or integer)"
            )
        dtypes.append(dt)
    return dtypes


def _list_dtype(path: str, schema: pa.Schema, col: str) -> tuple[np.dtype, int | None]:
    """dtype of a list-of-numbers embedding column (present: :func:`check_names`), and
    its size if fixed."""
    t = schema.field(col).type
    if not is_list(t):
        raise InputError(
            f"{path}: column '{col}' has type {t}; expected a list of numbers per row "
            "(or use --embedding-columns 'PATTERN' for one column per dimension)"
        )
    dt = numeric_dtype(t.value_type)
    if dt is None:
        raise InputError(
            f"{path}: column '{col}' holds lists of {t.value_type}; expected lists of "
            "numbers (float or integer)"
        )
    return dt, (t.list_size if pa.types.is_fixed_size_list(t) else None)


# --------------------------------------------------------------------------
# 3. row count and the output


def _count_rows(files: list[str], handles: list[pq.ParquetFile], display: str) -> int:
    """Total rows from the files' metadata; zero is an error."""
    rows_total = 0
    for f, h in zip(files, handles, strict=True):
        with arrow_errors(f, "cannot read Parquet metadata"):
            rows_total += h.metadata.num_rows
    if rows_total == 0:
        raise InputError(f"{display}: the dataset has 0 rows; expected at least one")
    return rows_total


@dataclass
class _Sink:
    """Where row groups land: the embedding matrix (allocated once) and the role columns.

    The matrix is allocated as soon as D is known -- at once when the schema
    fixes it, else from the first row -- after ``memory_check`` has passed.
    """

    layout: _Layout
    rows_total: int
    memory_check: MemoryCheck | None
    out: np.ndarray | None = None
    dim: int | None = None
    done: int = 0
    parts: dict[str, list[np.ndarray]] = field(
        default_factory=lambda: {"label": [], "group": [], "query": [], "gallery": []})
    #: one ``str`` object per distinct label or group value (``_columns.shared_strings``)
    strings: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Allocate at once when the layout fixes D."""
        self.dim = self.layout.dim
        if self.dim is not None and self.layout.dtype is not None:
            self._allocate(self.dim)

    def _allocate(self, dim: int) -> None:
        """The memory check, then the (rows_total, dim) matrix."""
        assert self.layout.dtype is not None
        if self.memory_check is not None:
            self.memory_check(self.rows_total, dim, self.layout.dtype.itemsize)
        self.out = np.empty((self.rows_total, dim), dtype=self.layout.dtype)

    def add(self, tbl: pa.Table, path: str, file_row: int) -> None:
        """Convert one non-empty row group (rows ``file_row...`` of ``path``) into place."""
        n = tbl.num_rows
        if self.done + n > self.rows_total:
            raise InputError(
                f"{path}: holds more rows than its metadata says ({self.rows_total} in all)"
            )
        layout, done = self.layout, self.done
        if layout.per_dimension:
            assert self.out is not None
            for j, c in enumerate(layout.embedding_columns):
                fill_scalar_column(self.out[done : done + n, j], tbl.column(c), path, c, file_row)
        elif layout.embedding_columns:
            name = layout.embedding_columns[0]
            block, self.dim = list_column_to_numpy(tbl.column(name), path, name, file_row,
                                                   self.dim)
            if self.out is None:
                if self.dim == 0:
                    raise InputError(
                        f"{path}: column '{name}' row {file_row} has 0 values; "
                        "expected at least one"
                    )
                self._allocate(self.dim)
            self.out[done : done + n] = block
        for role in ("label", "group"):
            if role in layout.roles:
                col = layout.roles[role]
                self.parts[role].append(
                    strings_from_arrow(tbl.column(col), path, col, file_row, self.strings))
        for role in ("query", "gallery"):
            if role in layout.roles:
                col = layout.roles[role]
                self.parts[role].append(flags_from_arrow(tbl.column(col), path, col, file_row))
        self.done += n

    def finish(self, display: str, files: list[str]) -> Columns:
        """The columns read, concatenated (the matrix cut to the rows actually read)."""
        done = self.done
        if done == 0:
            raise InputError(f"{display}: the dataset has 0 rows; expected at least one")
        if self.layout.embedding_columns:
            assert self.out is not None
            embeddings = self.out if done == self.rows_total else self.out[:done]
        else:
            embeddings = np.empty((done, 0), dtype=np.float32)

        def cat(parts: list[np.ndarray]) -> np.ndarray | None:
            if not parts:
                return None
            return parts[0] if len(parts) == 1 else np.concatenate(parts)

        return Columns(
            embeddings=embeddings,
            labels=cat(self.parts["label"]),
            groups=cat(self.parts["group"]),
            is_query=cat(self.parts["query"]),
            is_gallery=cat(self.parts["gallery"]),
            files=tuple(files),
        )


# --------------------------------------------------------------------------
# 4. the row groups


def _batch_rows(layout: _Layout) -> int:
    """Rows per batch: :data:`BATCH_BYTES` of embeddings, at least 1,024."""
    if layout.dim is None or layout.dtype is None:
        return _BATCH_ROWS_UNKNOWN_DIM
    return max(1024, BATCH_BYTES // max(1, layout.dim * layout.dtype.itemsize))


def _read_row_groups(
    files: list[str],
    handles: list[pq.ParquetFile],
    layout: _Layout,
    sink: _Sink,
    progress: ProgressCallback | None,
) -> None:
    """Read every row group of every file into ``sink`` in batches of rows
    (a row group is never decoded whole), calling ``progress`` after each.
    Columns are decoded on Arrow's threads only for one column per dimension
    (for a list column, threads hold several batches' buffers at once)."""
    projection = layout.projection
    batch_rows = _batch_rows(layout)
    for f, h in zip(files, handles, strict=True):
        file_row = 0
        with arrow_errors(f, "cannot read Parquet data (corrupt file?)"):
            for g in range(h.num_row_groups):
                for batch in h.iter_batches(batch_size=batch_rows, row_groups=[g],
                                            columns=projection,
                                            use_threads=layout.per_dimension):
                    n = batch.num_rows
                    if n == 0:
                        continue
                    sink.add(pa.Table.from_batches([batch]), f, file_row)
                    file_row += n
                    if progress is not None:
                        progress(sink.done, sink.rows_total)
