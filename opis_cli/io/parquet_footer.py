"""The top-level column names of a Parquet file, from its footer, without pyarrow.

A Parquet file ends with its metadata (a Thrift ``FileMetaData`` in the
compact protocol), its length (4 bytes, little-endian) and ``PAR1``. The
metadata's second field is the schema: a depth-first list of
``SchemaElement`` (name, number of children); the root's children are the
columns. :func:`column_names` reads that far and no further (the row groups
that follow are not decoded), so ``opis evaluate`` can say that a column is
missing before pyarrow, numpy and pandas load (about 1 s on 2 cores).

It is a shortcut, never the authority: anything it does not understand (an
encrypted footer, a truncated file, a Thrift type it does not expect) gives
None, and the Parquet reader (pyarrow) then reads the file and reports
whatever is wrong in its own words. ``tests/test_startup.py`` compares it
with pyarrow's schema names on files of every shape the tests write.

Format reference: https://github.com/apache/parquet-format (``parquet.thrift``,
``FileMetaData``, ``SchemaElement``) and the Thrift compact protocol
specification (``thrift/doc/specs/thrift-compact-protocol.md``).
"""

from __future__ import annotations

import os

__all__ = ["column_names"]

_MAGIC = b"PAR1"

# Thrift compact protocol type codes.
_TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP, _STRUCT = range(1, 13)

#: A footer longer than this is not read here (the reader reads it).
MAX_FOOTER = 64 * 2**20


class _Unexpected(Exception):
    """The bytes are not what this reader understands: fall back to pyarrow."""


class _Reader:
    """A cursor over Thrift compact-protocol bytes."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise _Unexpected("truncated")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def varint(self) -> int:
        shift = value = 0
        while True:
            b = self.byte()
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7
            if shift > 70:
                raise _Unexpected("varint too long")

    def zigzag(self) -> int:
        v = self.varint()
        return (v >> 1) ^ -(v & 1)

    def binary(self) -> bytes:
        n = self.varint()
        end = self.pos + n
        if end > len(self.data):
            raise _Unexpected("truncated")
        out = self.data[self.pos:end]
        self.pos = end
        return out

    def field(self, last: int) -> tuple[int, int]:
        """The next field's (id, type) of a struct; type 0 is its end."""
        head = self.byte()
        kind = head & 0x0F
        if kind == 0:
            return 0, 0
        delta = head >> 4
        return (last + delta if delta else self.zigzag()), kind

    def list_header(self) -> tuple[int, int]:
        head = self.byte()
        size = head >> 4
        if size == 15:
            size = self.varint()
        return size, head & 0x0F

    def skip(self, kind: int, depth: int = 0) -> None:
        """Skip one value of ``kind``."""
        if depth > 64:
            raise _Unexpected("nested too deep")
        if kind in (_TRUE, _FALSE):
            return  # a struct field's bool is in its header
        if kind == _BYTE:
            self.byte()
        elif kind in (_I16, _I32, _I64):
            self.varint()
        elif kind == _DOUBLE:
            self.pos += 8
        elif kind == _BINARY:
            self.binary()
        elif kind in (_LIST, _SET):
            size, elem = self.list_header()
            for _ in range(size):
                if elem in (_TRUE, _FALSE):
                    self.byte()  # a list's bools are one byte each
                else:
                    self.skip(elem, depth + 1)
        elif kind == _MAP:
            size = self.varint()
            if size:
                types = self.byte()
                for _ in range(size):
                    self.skip(types >> 4, depth + 1)
                    self.skip(types & 0x0F, depth + 1)
        elif kind == _STRUCT:
            last = 0
            while True:
                last, k = self.field(last)
                if k == 0:
                    return
                self.skip(k, depth + 1)
        else:
            raise _Unexpected(f"thrift type {kind}")
        if self.pos > len(self.data):
            raise _Unexpected("truncated")


def _schema_element(r: _Reader) -> tuple[str, int]:
    """(name, num_children) of one ``SchemaElement`` (fields 4 and 5)."""
    name: str | None = None
    children = 0
    last = 0
    while True:
        last, kind = r.field(last)
        if kind == 0:
            break
        if last == 4 and kind == _BINARY:
            try:
                name = r.binary().decode("utf-8")
            except UnicodeDecodeError:
                raise _Unexpected("name not UTF-8") from None
        elif last == 5 and kind == _I32:
            children = r.zigzag()
        else:
            r.skip(kind)
    if name is None or children < 0:
        raise _Unexpected("schema element without a name")
    return name, children


def _schema(metadata: bytes) -> list[tuple[str, int]]:
    """The ``schema`` list of a ``FileMetaData`` (field 2), read up to it."""
    r = _Reader(metadata)
    last = 0
    while True:
        last, kind = r.field(last)
        if kind == 0:
            raise _Unexpected("no schema")
        if last == 2 and kind == _LIST:
            size, elem = r.list_header()
            if elem != _STRUCT:
                raise _Unexpected("schema is not a list of structs")
            return [_schema_element(r) for _ in range(size)]
        r.skip(kind)


def _top_level(elements: list[tuple[str, int]]) -> list[str]:
    """The names of the root's children, skipping the subtree of each."""
    if not elements:
        raise _Unexpected("empty schema")
    names = []
    i = 1
    for _ in range(elements[0][1]):
        if i >= len(elements):
            raise _Unexpected("schema shorter than its counts")
        names.append(elements[i][0])
        pending = 1
        while pending:
            if i >= len(elements):
                raise _Unexpected("schema shorter than its counts")
            pending += elements[i][1] - 1
            i += 1
    if i != len(elements):
        raise _Unexpected("schema longer than its counts")
    return names


def column_names(path: str) -> list[str] | None:
    """The top-level column names of the Parquet file ``path``, in file order;
    None when the footer cannot be read here (see the module docstring)."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < 12:
                return None
            f.seek(size - 8)
            tail = f.read(8)
            if tail[4:] != _MAGIC:
                return None  # not Parquet, or an encrypted footer ("PARE")
            length = int.from_bytes(tail[:4], "little")
            if length <= 0 or length > MAX_FOOTER or length > size - 12:
                return None
            f.seek(size - 8 - length)
            metadata = f.read(length)
        return _top_level(_schema(metadata))
    except (OSError, _Unexpected, IndexError, ValueError):
        return None
