"""Writing result files atomically (temp file in the same folder, then rename).

A failed or interrupted run never leaves a partial output file behind.
"""

from __future__ import annotations

import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import InputError


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success."""
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"{target}: folder {folder} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically; ``-`` means standard output."""
    if str(path) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_table(path: str | os.PathLike, columns: dict) -> None:
    """Write a column dict as Parquet (``.parquet``) or CSV (anything else)."""
    import pyarrow as pa

    table = pa.table({k: pa.array(v) for k, v in columns.items()})
    suffix = Path(path).suffix.lower()
    with atomic_path(path) as tmp:
        if suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            pq.write_table(table, tmp)
        elif suffix in (".csv", ".txt", ""):
            import pyarrow.csv as pcsv

            pcsv.write_csv(table, tmp)
        else:
            raise InputError(f"{path}: expected a .parquet or .csv file name for the curves table")
