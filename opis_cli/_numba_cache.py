"""Where numba keeps the compiled kernels: beside them, or a user cache folder.

numba caches a compiled kernel (``cache=True``) in the ``__pycache__`` folder
beside its source. When that folder cannot be written (site-packages owned by
root, a read-only image), :func:`use_user_cache_if_read_only` points
``NUMBA_CACHE_DIR`` at ``$XDG_CACHE_HOME/opis/numba`` (``~/.cache/opis/numba``)
so that the kernels are compiled once per user, not on every run. It must run
before numba is imported (numba reads the variable then); an explicit
``NUMBA_CACHE_DIR`` is always left alone. No numba or numpy import here.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

#: the folder of the compiled kernels' sources (``_kernels.py``, ``_transfer_kernels.py``)
KERNELS_DIR = Path(__file__).resolve().parent / "engines"


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/opis/numba``, else ``~/.cache/opis/numba``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "opis" / "numba"


def writable(folder: Path) -> bool:
    """Whether numba can write its cache files in ``folder/__pycache__``."""
    pycache = folder / "__pycache__"
    target = pycache if pycache.is_dir() else folder
    return os.access(target, os.W_OK | os.X_OK)


def use_user_cache_if_read_only(kernels_dir: Path = KERNELS_DIR) -> str | None:
    """Set ``NUMBA_CACHE_DIR`` to :func:`user_cache_dir` when ``kernels_dir`` is not
    writable and the variable is unset; returns the folder set, else None."""
    if os.environ.get("NUMBA_CACHE_DIR") or writable(kernels_dir):
        return None
    folder = user_cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # numba falls back to its own user-wide cache, or compiles each run
    os.environ["NUMBA_CACHE_DIR"] = str(folder)
    import sys

    if "numba" in sys.modules:  # imported already (by the caller): make it read the variable
        sys.modules["numba"].core.config.reload_config()
    return str(folder)


def _index_path(dispatcher) -> str | None:
    """numba's index file of ``dispatcher``'s cache (None when it has no cache)."""
    try:
        return dispatcher._cache._cache_file._index_path
    except AttributeError:
        return None


def cached(dispatcher) -> bool:
    """Whether numba's on-disk cache holds a compiled version of ``dispatcher``
    (its index file exists). False when that cannot be told."""
    index = _index_path(dispatcher)
    return index is not None and os.path.exists(index)


#: the file, in a kernel's cache folder, that one compiling process at a time holds
LOCK_NAME = "opis-compile.lock"
_THREADS = threading.RLock()
_held: dict = {"depth": 0, "fd": None}


def lock_path(dispatcher) -> str | None:
    """The compile lock of ``dispatcher``'s cache folder (None when it has none)."""
    index = _index_path(dispatcher)
    return None if index is None else os.path.join(os.path.dirname(index), LOCK_NAME)


@contextmanager
def compile_lock(dispatcher) -> Iterator[None]:
    """Hold the compile lock of ``dispatcher``'s cache folder while numba loads
    or compiles a version of it (``_jit.kernel`` wraps ``compile``).

    numba's cache is not safe for two processes that compile one kernel at
    once: it writes a kernel's index before its data, so a process can read
    an index that points at a data file not yet written, or written by
    another numba version, or by a process that compiled another version
    of the kernel (numba issue 10128; seen as "LLVM bitcode parsing error").
    With the lock, a second process waits for the first, then loads what it
    compiled. Re-entrant (a kernel's callees are compiled inside it) and
    shared by the process's threads; an ``flock`` (released by the OS if the
    process dies). Where the folder cannot be written or the platform has
    no ``fcntl``, nothing is locked."""
    with _THREADS:
        if _held["depth"] == 0:
            _held["fd"] = _acquire(lock_path(dispatcher))
        _held["depth"] += 1
        try:
            yield
        finally:
            _held["depth"] -= 1
            if _held["depth"] == 0 and _held["fd"] is not None:
                fd, _held["fd"] = _held["fd"], None
                _release(fd)


def _acquire(path: str | None) -> int | None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return None
    if path is None:
        return None
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError:  # a file system without locks
        os.close(fd)
        return None
    return fd


def _after_fork_in_child() -> None:
    """A child forked while a thread held the lock starts without it: a new
    thread lock, and the inherited descriptor left open (unlocking it would
    release the parent's lock, which shares it)."""
    global _THREADS
    _THREADS = threading.RLock()
    _held.update(depth=0, fd=None)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _release(fd: int) -> None:
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
