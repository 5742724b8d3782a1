"""File-level helpers shared by every reader: paths, suffixes and error messages.

Owns the checks made before a file is opened (exists, readable, a known
suffix), the one-line form of a library's error, the shortened list of
column or array names quoted in messages, and the translation of pyarrow and
OS failures into :class:`~opis_cli.errors.InputError`.

No pyarrow at import: :func:`arrow_errors` imports it when first used.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType

from opis_cli.errors import InputError

#: Suffixes read as Parquet (a directory of ``*.parquet`` files is Parquet too).
PARQUET_SUFFIXES = (".parquet", ".pq")

#: Suffixes of a labels file (a directory of ``*.parquet`` files is accepted too).
LABEL_SUFFIXES = (".npy", ".txt", ".csv") + PARQUET_SUFFIXES

#: At most this many names are quoted in a message; the rest are counted.
MAX_LISTED_NAMES = 20


def suffix(path: str) -> str:
    """The lower-case suffix of ``path`` including the dot, or ``""``."""
    return os.path.splitext(path)[1].lower()


def check_exists(path: str) -> None:
    """Raise ``InputError`` unless ``path`` exists and is readable.

    Raises
    ------
    InputError
        ``PATH: no such file or directory`` or ``PATH: not readable
        (permission denied)``.
    """
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file or directory")
    if not os.access(path, os.R_OK):
        raise InputError(f"{path}: not readable (permission denied)")


def check_suffix(path: str, allowed: Sequence[str], what: str, *, allow_dir: bool) -> None:
    """Raise ``InputError`` unless ``path`` is a readable file with an ``allowed`` suffix.

    Parameters
    ----------
    path : str
        The file to check.
    allowed : sequence of str
        Lower-case suffixes with the dot, quoted in the message in this order.
    what : str
        What the file is, for the message (e.g. ``"labels file"``).
    allow_dir : bool
        Accept a directory as well (a folder of Parquet files).
    """
    check_exists(path)
    if allow_dir and os.path.isdir(path):
        return
    if os.path.isdir(path):
        raise InputError(f"{path}: is a directory; expected a file")
    if suffix(path) not in allowed:
        shown = suffix(path) or "(none)"
        raise InputError(
            f"{path}: unknown {what} type '{shown}'; expected one of "
            + ", ".join(allowed)
            + (" or a directory of .parquet files" if allow_dir else "")
        )


def parquet_files(path: str) -> list[str]:
    """The Parquet files behind ``path``: itself, or a directory's ``*.parquet`` by name.

    Raises
    ------
    InputError
        The directory cannot be listed, holds no ``*.parquet`` file, or one
        of them is not readable.
    """
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
        check_exists(f)
    return files


def one_line(exc: BaseException) -> str:
    """``str(exc)`` on one line, cut to 200 characters."""
    text = " ".join(str(exc).split())
    return text if len(text) <= 200 else text[:197] + "..."


def list_names(names: Sequence[str]) -> str:
    """Comma-separated ``names``; past :data:`MAX_LISTED_NAMES`, the rest are counted."""
    if len(names) <= MAX_LISTED_NAMES:
        return ", ".join(names)
    shown = ", ".join(names[:MAX_LISTED_NAMES])
    return f"{shown}, ... ({len(names)} in all)"


def require(module: str, path: str, what: str, extra: str) -> ModuleType:
    """Import an optional library of a format reader, or say which extra installs it.

    Parameters
    ----------
    module : str
        The module to import (``"lance"``, ``"h5py"``, ...).
    path, what : str
        The input and its format, for the message.
    extra : str
        The pip extra of ``opis-cli`` that installs it.

    Raises
    ------
    InputError
        ``PATH: reading WHAT needs the MODULE package: pip install 'opis-cli[EXTRA]'``;
        a library that is installed but fails to import is named likewise.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise InputError(
            f"{path}: reading {what} needs the '{module}' package: "
            f"pip install 'opis-cli[{extra}]'"
        ) from exc
    except Exception as exc:  # installed but broken, e.g. built for another numpy
        raise InputError(
            f"{path}: the '{module}' package, needed to read {what}, fails to import "
            f"({one_line(exc)}); reinstall it: pip install 'opis-cli[{extra}]'"
        ) from exc


@contextmanager
def arrow_errors(path: str, doing: str) -> Iterator[None]:
    """Turn pyarrow / OS failures while touching ``path`` into one-line InputErrors.

    The message is ``PATH: DOING (the library's message on one line)``;
    an ``InputError`` raised inside passes through unchanged.
    """
    import pyarrow as pa

    try:
        yield
    except InputError:
        raise
    except (pa.ArrowException, OSError, EOFError) as exc:
        raise InputError(f"{path}: {doing} ({one_line(exc)})") from exc
