"""The Lance reader: a ``.lance`` dataset folder (a LanceDB table is one).

The latest version of the dataset is scanned in batches of the columns
needed, and read with the Parquet reader's rules
(:func:`~opis_cli.io.parquet.read_arrow`): the same column options, checks
and messages. Peak memory is the result plus one batch.

``pylance`` (``import lance``) is an optional dependency (the ``lance``
extra), imported when a dataset is read.
"""

from __future__ import annotations

import os

from opis_cli.errors import InputError

from ._columns import Columns, ColumnSpec, MemoryCheck, ProgressCallback
from ._files import one_line, require
from .parquet import read_arrow

__all__ = ["read", "is_lance_folder"]

_BATCH_ROWS = 65536


def is_lance_folder(path: str) -> bool:
    """Whether ``path`` is a Lance dataset: a ``.lance`` folder or one holding ``_versions``."""
    return os.path.isdir(path) and (
        path.rstrip("/\\").lower().endswith(".lance")
        or os.path.isdir(os.path.join(path, "_versions")))


def read(
    path: str,
    spec: ColumnSpec,
    *,
    progress: ProgressCallback | None = None,
    memory_check: MemoryCheck | None = None,
) -> Columns:
    """Read a Lance dataset folder (the format reader of ``read_dataset``).

    Raises
    ------
    InputError
        ``pylance`` not installed; not a Lance dataset; the column errors of
        the Parquet reader.
    """
    lance = require("lance", path, "a Lance dataset", "lance")
    try:
        ds = lance.dataset(path)
        schema, rows = ds.schema, ds.count_rows()
    except Exception as exc:  # lance raises OSError, ValueError or its own errors
        raise InputError(f"{path}: not a Lance dataset ({one_line(exc)})") from exc

    def batches(columns: list[str]):
        yield from ds.to_batches(columns=columns, batch_size=_BATCH_ROWS, scan_in_order=True)

    try:
        return read_arrow(path, schema, rows, batches, spec, files=_files(path),
                          progress=progress, memory_check=memory_check)
    except (InputError, MemoryError):
        raise
    except Exception as exc:  # any failure of the library while scanning is the dataset's
        raise InputError(f"{path}: cannot read the Lance dataset ({one_line(exc)})") from exc


def _files(path: str) -> list[str]:
    """Every file of the dataset folder (data, manifests), by path, for provenance."""
    out = []
    for root, dirs, names in os.walk(path):
        dirs.sort()
        out.extend(os.path.join(root, n) for n in sorted(names))
    return out
