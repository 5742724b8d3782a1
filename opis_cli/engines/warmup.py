"""numba's one-time start-up, begun on a background thread while an input is read.

The first compiled kernel a process runs (loaded from the cache or compiled)
first pays numba's one-time start-up: its typing and target contexts load
their registries of implementations, importing ``numba.np.arraymath`` and
friends (0.3-0.5 s on the machines of docs/performance.md, whatever the
input). Reading a Parquet file or ``.npy`` array mostly waits outside the
GIL (decoding, copying, hashing), so :func:`start` runs that start-up on a
daemon thread while the application layer reads (``app.load_dataset``); the
first kernel then finds it done, or waits for it under numba's compiler
lock. It changes no result: the same registries are loaded, once, either
way; only when does.

The start-up itself is ``_jit.start_up`` (the kernel modules alone import
numba). It takes numba's locks in numba's own order: taking the compiler
lock before a context exists deadlocks against a main thread that creates
the context, as a kernel module's import does.

It is begun only for inputs of at least :data:`WARM_BYTES` bytes (smaller
ones may take the small-input route, which loads no numba) and once per
process. ``_OPIS_NO_WARMUP=1`` (private, for ``benchmarks/bench_process.py``'s
comparison) turns it off.
"""

from __future__ import annotations

import os
import threading

#: inputs at least this large (bytes on disk) begin the start-up while they are read:
#: above about 270 rows of any width they exceed the small-input route's bound on
#: products (``exact.SMALL_TERMS``, 2**27 terms)
WARM_BYTES = 2 * 2**20

_lock = threading.Lock()
_thread: threading.Thread | None = None
#: what the background start-up raised, if anything (the first kernel then meets it itself)
error: BaseException | None = None


def input_bytes(path: str) -> int:
    """The size on disk of a file, or of the files below a folder (0 if absent)."""
    try:
        if not os.path.isdir(path):
            return os.path.getsize(path)
        total = 0
        for root, _dirs, files in os.walk(path):
            for f in files:
                try:
                    total += os.path.getsize(os.path.join(root, f))
                except OSError:
                    pass
                if total >= WARM_BYTES:
                    return total
        return total
    except OSError:
        return 0


def _start_up() -> None:
    global error
    try:
        from ._jit import start_up  # numba, after the cache folder is chosen

        start_up()
    except BaseException as e:  # noqa: BLE001 - reported by the first kernel, not here
        error = e


def start(nbytes: int) -> bool:
    """Begin numba's start-up on a daemon thread for an input of ``nbytes``
    bytes; returns whether it was begun now (not for small inputs, not twice,
    not with ``_OPIS_NO_WARMUP=1``)."""
    global _thread
    if nbytes < WARM_BYTES or os.environ.get("_OPIS_NO_WARMUP") == "1":
        return False
    with _lock:
        if _thread is not None:
            return False
        _thread = threading.Thread(target=_start_up, name="opis-numba-start-up", daemon=True)
        _thread.start()
    return True


def join(timeout: float | None = None) -> bool:
    """Wait for a begun start-up; returns whether none is running (tests)."""
    t = _thread
    if t is not None:
        t.join(timeout)
        return not t.is_alive()
    return True
