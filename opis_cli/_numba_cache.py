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
from pathlib import Path

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


def cached(dispatcher) -> bool:
    """Whether numba's on-disk cache holds a compiled version of ``dispatcher``
    (its index file exists). False when that cannot be told."""
    try:
        return os.path.exists(dispatcher._cache._cache_file._index_path)
    except AttributeError:
        return False
