"""The contract every format reader fulfils, and the column checks they share.

A format reader (``parquet``, ``arrays``, and later ones) is a function::

    read(path: str, spec: ColumnSpec, *, progress, memory_check) -> Columns

It reads the columns that ``spec`` names from ``path`` and returns them as a
:class:`Columns`: embeddings as a 2-D float array, labels and groups as object
arrays of ``str``, query/gallery flags as bool arrays. The conversions below
are what makes every format agree on those types and on the error messages
(one line naming the file, the column or array, the 0-based row, and what was
expected):

- Arrow types: :func:`numeric_dtype`, :func:`is_list`, :func:`is_label_type`,
  :func:`is_flag_type`;
- Arrow columns to NumPy: :func:`strings_from_arrow`,
  :func:`flags_from_arrow`, :func:`list_column_to_numpy`,
  :func:`fill_scalar_column`;
- NumPy arrays: :func:`strings_from_numpy`, :func:`flags_from_numpy`,
  :func:`check_embeddings`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
import pyarrow as pa

from opis_cli.errors import InputError

# the column spec and the names check need neither numpy nor pyarrow (opis_cli.io._spec)
from ._spec import (  # noqa: F401  (re-exported: the readers import them from here)
    AUTO_GALLERY,
    AUTO_QUERY,
    HINTS,
    ColumnSpec,
    MemoryCheck,
    ProgressCallback,
)


@dataclass(frozen=True)
class Columns:
    """What a format reader returns: the role columns of one input, converted.

    Attributes
    ----------
    embeddings : numpy.ndarray, shape (N, D)
        float16/32/64 as stored (integers become float32). Shape (N, 0) when
        only labels were read.
    labels, groups : numpy.ndarray of str (object dtype), shape (N,), or None
        None when not read (or not present, for labels).
    is_query, is_gallery : numpy.ndarray of bool, shape (N,), or None
        None when the input has no such column.
    files : tuple of str
        The files read, in reading order (for provenance).
    """

    embeddings: np.ndarray
    labels: np.ndarray | None
    groups: np.ndarray | None
    is_query: np.ndarray | None
    is_gallery: np.ndarray | None
    files: tuple[str, ...]


# --------------------------------------------------------------------------
# Arrow types


def numeric_dtype(t: pa.DataType) -> np.dtype | None:
    """The NumPy dtype an Arrow numeric type is read as, or None if not numeric.

    Floats keep their width; integers become float32.
    """
    if pa.types.is_float16(t):
        return np.dtype(np.float16)
    if pa.types.is_float32(t):
        return np.dtype(np.float32)
    if pa.types.is_float64(t):
        return np.dtype(np.float64)
    if pa.types.is_integer(t):
        return np.dtype(np.float32)
    return None


def is_list(t: pa.DataType) -> bool:
    """list, large_list or fixed_size_list."""
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def is_label_type(t: pa.DataType) -> bool:
    """A scalar type (or a dictionary of one) that converts to ``str``."""
    if pa.types.is_dictionary(t):
        return is_label_type(t.value_type)
    return not (pa.types.is_nested(t) or pa.types.is_null(t))


def is_flag_type(t: pa.DataType) -> bool:
    """Boolean, or integers that must be 0/1."""
    return pa.types.is_boolean(t) or pa.types.is_integer(t)


# --------------------------------------------------------------------------
# Arrow columns -> NumPy


# Arrow's own conversion (``Array.to_numpy``) imports pandas, about 1 s of a 2 s run,
# and ``pyarrow.compute`` another 0.3 s: the columns are read from their buffers instead.


def _validity(chunk: pa.Array) -> np.ndarray:
    """One bool per element of ``chunk``: False where it is null."""
    n, off = len(chunk), chunk.offset
    bitmap = chunk.buffers()[0]
    if bitmap is None:
        return np.full(n, chunk.null_count == 0, dtype=bool)  # a null-type array: all null
    bits = np.frombuffer(bitmap, dtype=np.uint8)
    return np.unpackbits(bits, count=off + n, bitorder="little")[off:].astype(bool)


def values_to_numpy(chunk: pa.Array) -> np.ndarray:
    """A numeric or boolean Arrow array without nulls as a NumPy array: numbers as
    stored (a read-only view of Arrow's buffer), booleans unpacked (a new array).
    What ``chunk.to_numpy(zero_copy_only=False)`` gives, without pandas."""
    t, n, off = chunk.type, len(chunk), chunk.offset
    assert not chunk.null_count, "callers check for nulls first"
    data = chunk.buffers()[1]
    if pa.types.is_boolean(t):
        if data is None or n == 0:
            return np.zeros(n, dtype=bool)
        bits = np.frombuffer(data, dtype=np.uint8)
        return np.unpackbits(bits, count=off + n, bitorder="little")[off:].astype(bool)
    if not (pa.types.is_integer(t) or pa.types.is_floating(t)):
        raise TypeError(f"values_to_numpy: {t} is not a number type")
    # numpy's type of the same kind and width, from Arrow's (its buffers are
    # little-endian); not ``t.to_pandas_dtype()``, which imports pandas on some
    # pyarrow releases (15)
    kind = "f" if pa.types.is_floating(t) else "i" if pa.types.is_signed_integer(t) else "u"
    dtype = np.dtype(f"<{kind}{t.bit_width // 8}")
    if data is None or n == 0:
        return np.empty(n, dtype=dtype)
    return np.frombuffer(data, dtype=dtype, count=n, offset=off * dtype.itemsize)


#: rows of a NumPy array converted to ``str`` at a time: the per-row objects
#: made before :func:`shared_strings` keeps one per value are this many at most
STRING_CHUNK_ROWS = 1 << 16


def shared_strings(values: Iterable[str], memo: dict[str, str] | None = None) -> np.ndarray:
    """``values`` as an object array in which equal strings are one object.

    Each value is replaced by the first equal ``str`` seen (in ``memo``,
    which a reader passes from one batch to the next, or in this call): a
    label repeated over its class's rows is one object, not one per row (at
    1M rows of 50,000 classes, 8 MB of pointers instead of 62 MiB of
    strings, held for the whole run). Equal strings, so nothing downstream
    can tell. Every reader's labels and groups pass through here.

    Parameters
    ----------
    values : iterable of str
    memo : dict, optional
        ``{value: value}`` of the values seen so far; updated in place.

    Returns
    -------
    numpy.ndarray of str (object dtype), shape (len(values),)
    """
    get = (memo if memo is not None else {}).setdefault
    out = [get(v, v) for v in values]
    arr = np.empty(len(out), dtype=object)
    arr[:] = out
    return arr


def _text(chunk: pa.Array, path: str, name: str, memo: dict[str, str]) -> np.ndarray:
    """A string or large_string array without nulls -> object array of ``str``
    (equal values one object: :func:`shared_strings`)."""
    n, off = len(chunk), chunk.offset
    if n == 0:
        return np.empty(0, dtype=object)
    width = np.int64 if pa.types.is_large_string(chunk.type) else np.int32
    _, offsets_buf, data = chunk.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=width, count=n + 1,
                            offset=off * np.dtype(width).itemsize)
    start, end = int(offsets[0]), int(offsets[-1])
    raw = b"" if data is None else memoryview(data)[start:end].tobytes()
    bounds = (offsets - start).tolist()
    if raw.isascii():  # one decode; character offsets are byte offsets
        text = raw.decode("ascii")
        return shared_strings((text[a:b] for a, b in zip(bounds[:-1], bounds[1:])), memo)
    try:
        return shared_strings(
            (raw[a:b].decode("utf-8") for a, b in zip(bounds[:-1], bounds[1:])), memo)
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: column '{name}' holds text that is not UTF-8") from exc


def first_null(chunk: pa.Array) -> int:
    """Index of the first null of ``chunk`` (which has one)."""
    return int(np.flatnonzero(~_validity(chunk))[0])


def _filled_chunks(col: pa.ChunkedArray, path: str, name: str, row_base: int, expected: str):
    """The non-empty chunks of ``col`` with the file row of their first element;
    a null is an error naming its row (``expected`` completes the message)."""
    row = row_base
    for chunk in col.chunks:
        if len(chunk) == 0:
            continue
        if chunk.null_count:
            raise InputError(
                f"{path}: column '{name}' row {row + first_null(chunk)} is null; "
                f"expected {expected}"
            )
        yield chunk, row
        row += len(chunk)


def strings_from_arrow(col: pa.ChunkedArray, path: str, name: str, row_base: int,
                       memo: dict[str, str] | None = None) -> np.ndarray:
    """Any scalar column -> object array of Python ``str`` (nulls and NaN are
    errors), equal values one object (:func:`shared_strings`, with ``memo``).

    Parameters
    ----------
    col : pyarrow.ChunkedArray
        The column (of a row group, or of a whole table).
    path, name : str
        File and column, for messages.
    row_base : int
        Row of ``col[0]`` within the file, for messages.
    memo : dict, optional
        The strings of the batches read before (a reader's row groups share them).

    Returns
    -------
    numpy.ndarray of str (object dtype), shape (len(col),)
        Integers as ``str(int)``, floats as ``str(float)``, bytes decoded as
        UTF-8, dictionaries decoded.
    """
    memo = {} if memo is None else memo
    parts: list[np.ndarray] = []
    for chunk, row in _filled_chunks(col, path, name, row_base, "a value in every row"):
        if pa.types.is_dictionary(chunk.type):
            chunk = chunk.dictionary_decode()
        t = chunk.type
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            arr = _text(chunk, path, name, memo)
        elif pa.types.is_integer(t):
            arr = shared_strings((str(v) for v in values_to_numpy(chunk).tolist()), memo)
        elif (
            pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t)
        ):
            try:
                arr = shared_strings((v.decode("utf-8") for v in chunk.to_pylist()), memo)
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
            arr = shared_strings((str(v) for v in values), memo)
        parts.append(arr)
    if not parts:
        return np.empty(0, dtype=object)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def flags_from_arrow(col: pa.ChunkedArray, path: str, name: str, row_base: int) -> np.ndarray:
    """A boolean or 0/1 integer column -> bool array (nulls are errors).

    ``path``, ``name`` and ``row_base`` as in :func:`strings_from_arrow`.
    """
    parts = [flags_from_numpy(values_to_numpy(chunk), path, f"column '{name}'", row)
             for chunk, row in _filled_chunks(col, path, name, row_base, "true/false")]
    if not parts:
        return np.empty(0, dtype=bool)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def list_column_to_numpy(
    col: pa.ChunkedArray, path: str, name: str, row_base: int, dim: int | None
) -> tuple[np.ndarray, int]:
    """Convert a list-typed column to an (n, D) array via the flat values buffer.

    Parameters
    ----------
    col : pyarrow.ChunkedArray
        list, large_list or fixed_size_list of numbers.
    path, name, row_base
        As in :func:`strings_from_arrow`.
    dim : int or None
        The expected D; None takes it from the first row.

    Returns
    -------
    block : numpy.ndarray, shape (len(col), D)
    dim : int
        D (taken from the first row when ``dim`` is None).

    Raises
    ------
    InputError
        A null row, a null value inside a row, or a row of another length.
    """
    blocks: list[np.ndarray] = []
    for chunk, row in _filled_chunks(col, path, name, row_base, "a list of numbers"):
        n = len(chunk)
        if pa.types.is_fixed_size_list(chunk.type):
            size = chunk.type.list_size
            if dim is None:
                dim = size
            if size != dim:
                raise InputError(
                    f"{path}: column '{name}' row {row} has {size} values, expected {dim} "
                    "(rows must all have the same length)"
                )
            # the rows' values (flatten() would load pyarrow.compute; no row is null)
            values = chunk.values.slice(chunk.offset * size, n * size)
        else:
            offsets = values_to_numpy(chunk.offsets)
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
            start = int(offsets[0])
            values = chunk.values.slice(start, int(offsets[-1]) - start)
        if values.null_count:
            idx = first_null(values)
            bad = idx // dim if dim else 0
            raise InputError(
                f"{path}: column '{name}' row {row + bad} contains a null value; expected numbers"
            )
        flat = values_to_numpy(values)
        blocks.append(flat.reshape(n, dim))
    assert dim is not None
    if len(blocks) == 1:
        return blocks[0], dim
    return np.concatenate(blocks), dim


def fill_scalar_column(
    dest: np.ndarray, col: pa.ChunkedArray, path: str, name: str, row_base: int
) -> None:
    """Copy one numeric scalar column into ``dest`` (a strided column of the output).

    Nulls are errors; ``path``, ``name`` and ``row_base`` are for the message.
    """
    for chunk, row in _filled_chunks(col, path, name, row_base, "a number"):
        pos = row - row_base
        dest[pos : pos + len(chunk)] = values_to_numpy(chunk)


# --------------------------------------------------------------------------
# NumPy arrays


def flags_from_numpy(arr: np.ndarray, path: str, what: str, row_base: int = 0) -> np.ndarray:
    """A bool or 0/1 integer array -> bool array.

    ``what`` names the source in messages (``"column 'q'"``, ``"array 'q'"``);
    ``row_base`` is the file row of ``arr[0]``.
    """
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


def strings_from_numpy(arr: np.ndarray, path: str, what: str) -> np.ndarray:
    """A 1-D array of labels -> object array of Python ``str``.

    Unicode as is, bytes decoded as UTF-8, numbers as ``str`` of the Python
    scalar (``3 -> "3"``, ``3.0 -> "3.0"``, as for Parquet input); NaN is an
    error.
    """
    if arr.ndim != 1:
        raise InputError(
            f"{path}: {what} has shape {arr.shape}; expected a 1-D array (one value per row)"
        )
    kind = arr.dtype.kind
    if kind == "f":
        nan = np.flatnonzero(np.isnan(arr))
        if nan.size:
            raise InputError(
                f"{path}: {what} row {int(nan[0])} is NaN; expected a value in every row"
            )
    if kind == "U":
        convert = None
    elif kind == "S":
        convert = _decode_utf8
    elif kind in "biuf":
        # Python's str() of the scalar, so 3 -> "3" and 3.0 -> "3.0" as in Parquet input.
        convert = str
    else:
        raise InputError(f"{path}: {what} has type {arr.dtype}; expected strings or numbers")
    # a chunk of rows at a time, so that the per-row strings made before
    # shared_strings keeps one per value are few (STRING_CHUNK_ROWS)
    memo: dict[str, str] = {}
    out = np.empty(arr.shape[0], dtype=object)
    for s in range(0, arr.shape[0], STRING_CHUNK_ROWS):
        rows = arr[s:s + STRING_CHUNK_ROWS].tolist()
        try:
            out[s:s + len(rows)] = shared_strings(
                rows if convert is None else map(convert, rows), memo)
        except UnicodeDecodeError as exc:
            raise InputError(f"{path}: {what} holds bytes that are not UTF-8 text") from exc
    return out


def _decode_utf8(v: bytes) -> str:
    return v.decode("utf-8")


def check_embeddings(arr: np.ndarray, path: str, what: str) -> np.ndarray:
    """Check an embedding matrix: 2-D, numeric, at least one row and one dimension.

    Returns
    -------
    numpy.ndarray, shape (N, D)
        ``arr`` itself for float16/32/64 (a memory map stays one), float32
        for integers.
    """
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
