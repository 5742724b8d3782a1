"""Which columns to read, and whether a table has them: no numpy, no pyarrow.

The part of the readers' contract (``opis_cli.io._columns``) that needs no
data: the :class:`ColumnSpec` a reader is given, the roles it resolves from a
table's column names (:func:`roles`, :func:`matching`) and the check that
every named column exists (:func:`check_names`), with the readers' messages.
The Parquet reader runs that check on the schemas it opens; ``opis
evaluate`` runs it before (``opis_cli.io.dataset.check_columns``) on the names
of a Parquet footer (``opis_cli.io.parquet_footer``), so that a mistyped
``--label-column`` fails before numpy, pyarrow and the engine load.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from opis_cli.errors import InputError

from ._files import list_names

#: ``progress(rows_done, rows_total)``
ProgressCallback = Callable[[int, int], None]

#: ``memory_check(rows, dim, stored_itemsize)``: raise ``InputError`` when
#: ``rows x dim`` embeddings will not fit; ``stored_itemsize`` is the bytes per
#: value held in memory as read (0 for a memory-mapped file).
MemoryCheck = Callable[[int, int, int], None]

#: Columns (or ``.npz`` arrays) used as query / gallery flags when present and
#: no other column was named.
AUTO_QUERY = "is_query"
AUTO_GALLERY = "is_gallery"

#: The option to point at when a column of that role is missing.
HINTS = {
    "label": "use --label-column",
    "group": "check --group-column",
    "query": "check --query-column",
    "gallery": "check --gallery-column",
    "embedding": (
        "use --embedding-column, or --embedding-columns 'PATTERN' for one column per dimension"
    ),
}


@dataclass(frozen=True)
class ColumnSpec:
    """Which columns to read: the ``read_dataset`` options, as a reader sees them.

    Attributes
    ----------
    embedding_column : str or None
        Column holding one list of numbers per row.
    embedding_pattern : str or None
        ``fnmatch`` pattern selecting one numeric column per dimension;
        overrides ``embedding_column``.
    label_column : str or None
        None when the labels come from a separate labels file (the reader
        then does not read them).
    group_column : str or None
        Read only when given.
    query_column, gallery_column : str or None
        When None, a column named :data:`AUTO_QUERY` / :data:`AUTO_GALLERY`
        is used if present.
    options : tuple of (str, str)
        The format options given (``ReadOptions.format_options``: name,
        value), which a reader reads with :meth:`option`, e.g.
        ``spec.option("hf_split")``.
    """

    embedding_column: str | None = "embedding"
    embedding_pattern: str | None = None
    label_column: str | None = "label"
    group_column: str | None = None
    query_column: str | None = None
    gallery_column: str | None = None
    options: tuple[tuple[str, str], ...] = ()

    def option(self, name: str) -> str | None:
        """The value of format option ``name`` (see ``opis_cli.io.formats``), or None."""
        return dict(self.options).get(name)


def roles(spec: ColumnSpec, names: Sequence[str]) -> dict[str, str]:
    """Role -> column: the named ones, and ``is_query``/``is_gallery`` when present
    in ``names``; in the order label, group, query, gallery."""
    out: dict[str, str] = {}
    if spec.label_column is not None:
        out["label"] = spec.label_column
    if spec.group_column is not None:
        out["group"] = spec.group_column
    if spec.query_column is not None:
        out["query"] = spec.query_column
    elif AUTO_QUERY in names:
        out["query"] = AUTO_QUERY
    if spec.gallery_column is not None:
        out["gallery"] = spec.gallery_column
    elif AUTO_GALLERY in names:
        out["gallery"] = AUTO_GALLERY
    return out


def matching(names: Sequence[str], pattern: str, role_columns: dict[str, str]) -> list[str]:
    """The columns matching ``pattern`` in file order, role columns excluded."""
    taken = set(role_columns.values())
    return [c for c in names if fnmatch.fnmatchcase(c, pattern) and c not in taken]


def embedding_columns(path: str, names: Sequence[str], spec: ColumnSpec,
                      role_columns: dict[str, str]) -> list[str]:
    """The embedding columns of the first file: the one list column, or those matching
    the pattern (none matching is an error naming ``path``)."""
    pattern = spec.embedding_pattern
    if pattern is None:
        assert spec.embedding_column is not None
        return [spec.embedding_column]
    cols = matching(names, pattern, role_columns)
    if not cols:
        raise InputError(
            f"{path}: no columns match '{pattern}'; columns are: "
            f"{list_names(list(names))} (use --embedding-columns)"
        )
    return cols


def check_names(path: str, names: Sequence[str], role_columns: dict[str, str],
                list_column: str | None) -> None:
    """Every role column, and the embeddings' list column when one is named, is in ``names``.

    The first missing one (roles in order, then the list column) raises the
    readers' message: ``PATH: no column 'X'; columns are: ... (HINT)``.
    """
    wanted = list(role_columns.items())
    if list_column is not None:
        wanted.append(("embedding", list_column))
    present = set(names)
    for role, col in wanted:
        if col not in present:
            raise InputError(
                f"{path}: no column '{col}'; columns are: {list_names(list(names))} "
                f"({HINTS[role]})"
            )
