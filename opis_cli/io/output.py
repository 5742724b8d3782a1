"""Writing result files atomically (temp file in the same folder, then rename).

A failed or interrupted run never leaves a partial output file behind: every
output is first written to a temporary file beside its target, and only when
all of them are written are they renamed into place.
"""

from __future__ import annotations

import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from ..errors import InputError

TABLE_SUFFIXES = (".parquet", ".pq", ".csv")


def check_output_path(path: str | os.PathLike, option: str,
                      suffixes: Sequence[str] | None = None) -> None:
    """Fail early (before any work) when ``path`` cannot be written as a file."""
    if str(path) == "-":
        return
    target = Path(path)
    folder = target.parent
    if target.is_dir():
        raise InputError(f"{option} {target}: is a folder; expected a file name")
    if not folder.is_dir():
        raise InputError(f"{option} {target}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise InputError(f"{option} {target}: folder {folder} is not writable")
    if suffixes is not None and target.suffix.lower() not in suffixes:
        raise InputError(f"{option} {target}: expected a file name ending in "
                         f"{', '.join(suffixes)}")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success."""
    with staged() as stage:
        tmp = stage.temp_for(path)
        yield tmp


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class Staged:
    """Temporary files waiting to be renamed onto their targets together."""

    def __init__(self) -> None:
        self._pending: list[tuple[Path, Path]] = []

    def temp_for(self, path: str | os.PathLike) -> Path:
        target = Path(path)
        folder = target.parent
        if not folder.is_dir():
            raise InputError(f"{target}: folder {folder} does not exist")
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
        # mkstemp makes the file private (0600); outputs get the usual mode
        os.fchmod(fd, 0o666 & ~_umask())
        os.close(fd)
        self._pending.append((Path(tmp), target))
        return Path(tmp)

    def text(self, path: str | os.PathLike, text: str) -> None:
        """Stage ``text`` for ``path``; ``-`` writes to standard output at commit."""
        if str(path) == "-":
            self._pending.append((None, text))  # type: ignore[arg-type]
            return
        self.temp_for(path).write_text(text, encoding="utf-8")

    def table(self, path: str | os.PathLike, columns: dict) -> None:
        """Stage a column dict as Parquet (``.parquet``/``.pq``) or CSV (``.csv``)."""
        import pyarrow as pa

        suffix = Path(path).suffix.lower()
        if suffix not in TABLE_SUFFIXES:
            raise InputError(f"{path}: expected a .parquet or .csv file name for the table")
        table = pa.table({k: pa.array(v) for k, v in columns.items()})
        tmp = self.temp_for(path)
        if suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            pq.write_table(table, tmp)
        else:
            import pyarrow.csv as pcsv

            pcsv.write_csv(table, tmp)

    def commit(self) -> None:
        for tmp, target in self._pending:
            if tmp is None:
                sys.stdout.write(str(target))
                sys.stdout.flush()
            else:
                os.replace(tmp, target)
        self._pending = []

    def discard(self) -> None:
        for tmp, _ in self._pending:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except FileNotFoundError:
                    pass
        self._pending = []


@contextmanager
def staged() -> Iterator[Staged]:
    """Stage outputs; all are renamed into place on success, none on failure."""
    stage = Staged()
    try:
        yield stage
        stage.commit()
    except BaseException:
        stage.discard()
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically; ``-`` means standard output."""
    with staged() as stage:
        stage.text(path, text)
