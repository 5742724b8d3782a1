"""Writing result files atomically (temp file in the same folder, then rename).

A failed or interrupted run never leaves a partial output file behind: every
output is first written to a temporary file beside its target, and only when
all of them are written are they renamed into place. What goes wrong:

- an output folder that is missing, not a folder or not writable (read-only
  file system, permissions) is found by :func:`check_output_path` /
  :func:`check_output_folder` before any work, by creating and removing a
  probe file there;
- a write that fails (a full disk: ``ENOSPC``, a quota, an I/O error) becomes
  one :class:`~opis_cli.errors.InputError` naming the output and the reason;
  the temporary files are removed and the earlier files at the targets stay
  as they were;
- an interrupt (``KeyboardInterrupt``; the CLI turns SIGTERM into one) removes
  the temporary files too; SIGINT and SIGTERM are held back while the files
  are renamed into place or removed, so that a second signal cannot leave
  half of them behind.
"""

from __future__ import annotations

import errno as _errno
import os
import signal
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from ..errors import InputError

TABLE_SUFFIXES = (".parquet", ".pq", ".csv")


def check_output_path(path: str | os.PathLike, option: str,
                      suffixes: Sequence[str] | None = None) -> None:
    """Fail early (before any work) when ``path`` cannot be written as a file.

    The folder must exist and take a new file: a probe file is created in it
    and removed (``os.access`` alone says yes to root on a read-only mount).
    """
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
    _probe(folder, f"{option} {target}")


def check_output_folder(path: str | os.PathLike, option: str) -> None:
    """Fail early (before any work) when the folder ``path`` cannot take new files.

    An existing folder is probed; a missing one must have a writable nearest
    existing parent (the folder is created when the outputs are written).
    """
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise InputError(f"{option} {target}: exists and is not a folder")
    folder = target
    while not folder.exists():
        if folder.parent == folder:
            break
        folder = folder.parent
    if not folder.is_dir():
        raise InputError(f"{option} {target}: {folder} is not a folder")
    _probe(folder, f"{option} {target}")


def _probe(folder: Path, lead: str) -> None:
    """Create and remove a file in ``folder``; one ``InputError`` line if that fails."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".opis-probe.", dir=folder)
    except OSError as exc:
        raise InputError(f"{lead}: cannot write in folder {folder} "
                         f"({exc.strerror or exc})") from exc
    os.close(fd)
    try:
        os.unlink(probe)
    except OSError:  # pragma: no cover - created a moment ago
        pass


def _write_failed(target, exc: OSError) -> InputError:
    """The one line for a write that failed: the output and the reason."""
    what = exc.strerror or str(exc)
    if exc.errno in (_errno.ENOSPC, getattr(_errno, "EDQUOT", _errno.ENOSPC)):
        what += "; free some space and run again"
    return InputError(f"{target}: cannot write ({what}); the files being written were "
                      "removed, earlier files at their paths are unchanged")


@contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back (main thread, POSIX) for a short critical
    section; a signal that arrives meanwhile is delivered at its end."""
    if (not hasattr(signal, "pthread_sigmask")
            or threading.current_thread() is not threading.main_thread()):
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on
    success (for writers that take a path, as the examples' figures do)."""
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
        #: the target of the latest temporary file (named when a write fails)
        self.current: Path | None = None

    def temp_for(self, path: str | os.PathLike) -> Path:
        target = Path(path)
        folder = target.parent
        if not folder.is_dir():
            raise InputError(f"{target}: folder {folder} does not exist")
        self.current = target
        with _signals_held():  # created and recorded, or neither
            try:
                fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
            except OSError as exc:
                raise _write_failed(target, exc) from exc
            self._pending.append((Path(tmp), target))
        # mkstemp makes the file private (0600); outputs get the usual mode
        os.fchmod(fd, 0o666 & ~_umask())
        os.close(fd)
        return Path(tmp)

    def text(self, path: str | os.PathLike, text: str) -> None:
        """Stage ``text`` for ``path``; ``-`` writes to standard output at commit."""
        if str(path) == "-":
            self._pending.append((None, text))  # type: ignore[arg-type]
            return
        tmp = self.temp_for(path)
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as exc:
            raise _write_failed(path, exc) from exc

    def table(self, path: str | os.PathLike, columns: dict) -> None:
        """Stage a column dict as Parquet (``.parquet``/``.pq``) or CSV (``.csv``)."""
        import pyarrow as pa

        suffix = Path(path).suffix.lower()
        if suffix not in TABLE_SUFFIXES:
            raise InputError(f"{path}: expected a .parquet or .csv file name for the table")
        table = pa.table({k: pa.array(v) for k, v in columns.items()})
        tmp = self.temp_for(path)
        try:
            if suffix in (".parquet", ".pq"):
                import pyarrow.parquet as pq

                pq.write_table(table, tmp)
            else:
                import pyarrow.csv as pcsv

                pcsv.write_csv(table, tmp)
        except OSError as exc:  # pyarrow's I/O errors are OSError too
            raise _write_failed(path, exc) from exc

    def commit(self) -> None:
        """Rename every staged file onto its target (signals held meanwhile)."""
        with _signals_held():
            for tmp, target in self._pending:
                if tmp is not None:
                    os.replace(tmp, target)
            pending, self._pending = self._pending, []
        for tmp, target in pending:
            if tmp is None:
                sys.stdout.write(str(target))
                sys.stdout.flush()

    def discard(self) -> None:
        """Remove every staged file (signals held meanwhile)."""
        with _signals_held():
            for tmp, _ in self._pending:
                if tmp is not None:
                    try:
                        os.unlink(tmp)
                    except FileNotFoundError:
                        pass
            self._pending = []


@contextmanager
def staged() -> Iterator[Staged]:
    """Stage outputs; all are renamed into place on success, none on failure.

    An ``OSError`` raised while the outputs are written (e.g. a full disk
    while a report's figures are saved) becomes one ``InputError`` naming the
    output being written.
    """
    stage = Staged()
    try:
        yield stage
        stage.commit()
    except OSError as exc:
        stage.discard()
        if stage.current is None:
            raise
        raise _write_failed(stage.current, exc) from exc
    except BaseException:
        stage.discard()
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically; ``-`` means standard output."""
    with staged() as stage:
        stage.text(path, text)
