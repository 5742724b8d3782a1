"""A Parquet dataset that the Dask engine's workers read themselves.

``--engine dask`` on Parquet input (one file, or a folder of ``*.parquet``
files on a path every worker can read) does not read the embeddings in the
client. :func:`open_parquet` reads only what the client needs: the schemas,
the row counts of every row group (file footers), and the role columns
(label, group, query and gallery flags) through the Parquet reader's own
rules and messages (``parquet.read_files(..., want_embeddings=False)``).
It returns a :class:`ShardedEmbeddings`, which ``opis_cli.evaluate`` takes
in place of an array (see :meth:`ShardedEmbeddings.arrange`).

The embeddings are read on the workers through a :class:`ParquetShards`
(small and picklable: the file list, the column, the dtype and the row
group layout): :meth:`ParquetShards.read_rows` returns the rows asked for by
original row index, reading only the row groups that hold them and only the
embedding column, with the same conversion as the reader (the dtype of all
files promoted; integers become float32). The engine then turns them into
float32 exactly as ``prepare()`` does (``prepare._float32_rows``). The
engine never imports pyarrow: it only calls ``read_rows``.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, replace

import numpy as np

from ..errors import InputError
from ._files import arrow_errors

__all__ = ["ParquetShards", "ShardRows", "ShardedEmbeddings", "open_parquet"]

#: ParquetFile handles kept open per worker process (path -> handle)
_HANDLES: dict = {}
_MAX_HANDLES = 64


def _handle(path: str):
    import pyarrow.parquet as pq

    h = _HANDLES.get(path)
    if h is None:
        if not os.path.isfile(path):
            raise InputError(f"{path}: cannot read this file on worker {_where()} (no such file; "
                             "every worker must see the dataset at the path the client gives)")
        with arrow_errors(path, f"not readable on worker {_where()}"):
            h = pq.ParquetFile(path)
        if len(_HANDLES) >= _MAX_HANDLES:
            _HANDLES.pop(next(iter(_HANDLES))).close()
        _HANDLES[path] = h
    return h


def _where() -> str:
    """The host name, for messages from a worker."""
    import socket

    return socket.gethostname()


@dataclass(frozen=True)
class ParquetShards:
    """Where every row of a Parquet dataset lies: what a worker needs to read rows.

    Attributes
    ----------
    files : the Parquet files, in reading order (rows count across them)
    column : the embedding column (one list of numbers per row)
    dtype : the dtype the reader gives the matrix (all files promoted)
    dim : D
    rg_start : (n_row_groups + 1,) int64, first row of every row group (and
        the row count at the end), over all files in order
    rg_file, rg_index : (n_row_groups,) int64, file and index in the file of
        every row group
    token : identifies this dataset in the workers' caches
    """

    files: tuple[str, ...]
    column: str
    dtype: str
    dim: int
    rg_start: np.ndarray
    rg_file: np.ndarray
    rg_index: np.ndarray
    token: str

    @property
    def n_rows(self) -> int:
        return int(self.rg_start[-1])

    def row_groups(self, rows: np.ndarray) -> np.ndarray:
        """The row groups that hold ``rows`` (sorted, unique)."""
        rows = np.asarray(rows, np.int64)
        return np.unique(np.searchsorted(self.rg_start, rows, side="right") - 1)

    def read_rows(self, rows: np.ndarray) -> np.ndarray:
        """The embeddings of original rows ``rows`` (any order), as the reader
        gives them: ``(len(rows), D)`` of :attr:`dtype`.

        Reads the embedding column of only the row groups that hold them,
        one row group at a time (peak: the result plus one row group).
        """
        from ._columns import list_column_to_numpy

        rows = np.asarray(rows, np.int64)
        out = np.empty((len(rows), self.dim), np.dtype(self.dtype))
        if len(rows) == 0:
            return out
        if rows.min() < 0 or rows.max() >= self.n_rows:
            raise InputError(f"rows outside the dataset of {self.n_rows} rows")
        order = np.argsort(rows, kind="stable")
        srt = rows[order]
        rg_of = np.searchsorted(self.rg_start, srt, side="right") - 1
        cuts = np.flatnonzero(np.diff(rg_of)) + 1
        for part in np.split(np.arange(len(srt)), cuts):
            g = int(rg_of[part[0]])
            path = self.files[int(self.rg_file[g])]
            h = _handle(path)
            with arrow_errors(path, f"cannot read Parquet data on worker {_where()}"):
                tbl = h.read_row_group(int(self.rg_index[g]), columns=[self.column])
            first = int(self.rg_start[g])
            file_row = first - int(self.rg_start[np.searchsorted(self.rg_file, self.rg_file[g])])
            if tbl.num_rows != int(self.rg_start[g + 1]) - first:
                raise InputError(f"{path}: row group {int(self.rg_index[g])} changed since the "
                                 "client read its metadata")
            block, _ = list_column_to_numpy(tbl.column(self.column), path, self.column,
                                            file_row, self.dim)
            out[order[part]] = block[srt[part] - first]
        return out


class ShardRows:
    """The stand-in for ``Prepared.xq`` / ``xg`` of a sharded dataset: no
    rows, only where they are (``shards``, and the original row of every
    query / gallery position, ``rows``). The Dask engine recognises it by
    its ``shards`` attribute; any other engine that indexes it gets a
    one-line error."""

    def __init__(self, shards: ParquetShards, rows: np.ndarray):
        self.shards = shards
        self.rows = rows
        self.shape = (len(rows), shards.dim)
        self.ndim = 2
        self.dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, item):
        raise InputError("this dataset is read by the Dask workers (--engine dask); another "
                         "engine needs the embeddings in memory")


class ShardedEmbeddings:
    """Embeddings left in their Parquet files, for ``opis_cli.evaluate``
    with ``engine=DaskEngine(...)`` (see :func:`open_parquet`)."""

    #: ``opis_cli.evaluate`` arranges a sharded input with :meth:`arrange`
    sharded = True

    def __init__(self, shards: ParquetShards):
        self.shards = shards
        self.shape = (shards.n_rows, shards.dim)
        self.ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    def arrange(self, labels, *, metric: str, groups=None, is_query=None, is_gallery=None):
        """The ``Prepared`` arrangement of the rows (order, classes, groups,
        self columns) made by ``prepare()`` itself on a one-column stand-in
        for the embeddings, with :class:`ShardRows` in place of ``xq``/``xg``
        and the norms left to the engine (zeros here)."""
        from ..prepare import prepare

        n = self.shape[0]
        stand_in = np.broadcast_to(np.ones(1, np.float32), (n, 1))
        prep = prepare(stand_in, labels, metric=metric, groups=groups, is_query=is_query,
                       is_gallery=is_gallery)
        return replace(prep, xq=ShardRows(self.shards, prep.q_rows),
                       xg=ShardRows(self.shards, prep.g_rows),
                       qn2=np.zeros(len(prep.q_rows)), gn2=np.zeros(len(prep.g_rows)),
                       dim=self.shape[1])


@dataclass(frozen=True)
class ShardedDataset:
    """What :func:`open_parquet` read: the embeddings left in place, and
    the role columns (as ``read_dataset``'s ``Dataset``)."""

    embeddings: ShardedEmbeddings
    labels: np.ndarray
    groups: np.ndarray | None
    is_query: np.ndarray | None
    is_gallery: np.ndarray | None
    files: tuple[str, ...]


def open_parquet(path: str, *, embedding_column: str = "embedding", label_column: str = "label",
                 group_column: str | None = None, query_column: str | None = None,
                 gallery_column: str | None = None) -> ShardedDataset:
    """Open a Parquet file or folder for the workers to read.

    Reads the footers (row counts per row group, schemas: every column
    checked as the reader does) and the role columns; never the embedding
    column. Raises ``InputError`` (one line) for what ``read_dataset``
    would refuse: a missing or mistyped column, a file that is not Parquet,
    no labels, an empty dataset.
    """
    from . import parquet
    from ._columns import ColumnSpec
    from ._files import check_exists

    check_exists(path)
    files = parquet.parquet_files(path)
    spec = ColumnSpec(embedding_column=embedding_column, embedding_pattern=None,
                      label_column=label_column, group_column=group_column,
                      query_column=query_column, gallery_column=gallery_column)
    handles = []
    try:
        for f in files:
            with arrow_errors(f, "not a Parquet file or corrupt"):
                handles.append(_open(f))
        schemas = []
        for f, h in zip(files, handles):
            with arrow_errors(f, "cannot read Parquet schema"):
                schemas.append(h.schema_arrow)
        layout = parquet._resolve_columns(files, schemas, spec, want_embeddings=True)
        n = parquet._count_rows(files, handles, path)
        starts, rg_file, rg_index = [0], [], []
        for i, (f, h) in enumerate(zip(files, handles)):
            with arrow_errors(f, "cannot read Parquet metadata"):
                md = h.metadata
                for g in range(md.num_row_groups):
                    rows = md.row_group(g).num_rows
                    if rows == 0:
                        continue
                    starts.append(starts[-1] + rows)
                    rg_file.append(i)
                    rg_index.append(g)
        dim = layout.dim
        if dim is None:  # a variable-length list column: D from the first row
            dim = _first_dim(files[rg_file[0]], handles[rg_file[0]], rg_index[0],
                             layout.embedding_columns[0])
        if dim == 0:
            raise InputError(f"{files[0]}: column '{layout.embedding_columns[0]}' has 0 values "
                             "per row; expected at least one")
    finally:
        for h in handles:
            try:
                h.close()
            except Exception:  # best effort: only metadata was read
                pass
    cols = parquet.read_files(files, spec, display=path, want_embeddings=False)
    if cols.labels is None:  # pragma: no cover - the label column is required above
        raise InputError(f"{path}: this file holds no labels")
    if len(cols.labels) != n:
        raise InputError(f"{path}: {len(cols.labels)} labels for {n} rows")
    shards = ParquetShards(files=tuple(os.path.abspath(f) for f in files),
                           column=layout.embedding_columns[0], dtype=layout.dtype.str, dim=int(dim),
                           rg_start=np.asarray(starts, np.int64),
                           rg_file=np.asarray(rg_file, np.int64),
                           rg_index=np.asarray(rg_index, np.int64), token=uuid.uuid4().hex)
    return ShardedDataset(embeddings=ShardedEmbeddings(shards), labels=cols.labels,
                          groups=cols.groups, is_query=cols.is_query, is_gallery=cols.is_gallery,
                          files=tuple(files))


def _open(path: str):
    import pyarrow.parquet as pq

    return pq.ParquetFile(path)


def _first_dim(path: str, handle, group: int, column: str) -> int:
    """D of a variable-length list column, from the first value of the first
    row (the offsets of one row group's first row: the column's values of
    that row only are decoded)."""
    with arrow_errors(path, "cannot read Parquet data"):
        batch = next(handle.iter_batches(batch_size=1, row_groups=[group], columns=[column]))
    vals = batch.column(0)
    if vals.null_count:
        raise InputError(f"{path}: column '{column}' row 0 is null; expected a list of numbers")
    return len(vals[0].values)
