"""The decorator of the compiled kernels: numba's ``njit``, compiled once per argument types.

numba compiles a kernel once per distinct tuple of argument *types*. Called from
another kernel, a constant argument (``_counts_row(..., 0, ...)``, a ``weight`` of
1 or 2) has its own type (``Literal[int](0)``), so a helper called once with a
constant and once with a variable was compiled twice, the whole body each time
(half of the first run's compile time went to such duplicates and to ``int32``
beside ``int64`` scalars). :func:`kernel` types those calls as the plain
``int64`` / ``bool`` / ``float64`` version: one compile, the same machine code
for the variable and the constant (LLVM still folds a constant where it inlines
the helper), and the same results. Arrays keep their dtype and layout.
"""

from __future__ import annotations

from .._numba_cache import compile_lock, use_user_cache_if_read_only

use_user_cache_if_read_only()  # before numba reads NUMBA_CACHE_DIR (a read-only install)

import numba as nb  # noqa: E402
from numba.core import types  # noqa: E402


def _plain(t):
    """The type a kernel is compiled for in place of ``t``: a literal as its
    plain type, a signed integer scalar narrower than 64 bits as ``int64``."""
    t = types.unliteral(t)
    if isinstance(t, types.Integer) and t.signed and t.bitwidth < 64:
        return types.int64
    return t


def kernel(fn):
    """``numba.njit(cache=True, nogil=True)(fn)``, one compile per argument types
    (the module docstring): calls from other kernels compile (and reuse) the
    version for the plain types of their arguments; compiled or loaded under
    the compile lock (:func:`locked`)."""
    disp = nb.njit(cache=True, nogil=True)(fn)
    resolve = disp.get_call_template

    def get_call_template(args, kws):
        return resolve(tuple(_plain(a) for a in args), {k: _plain(v) for k, v in kws.items()})

    disp.get_call_template = get_call_template
    return locked(disp)


def start_up() -> None:
    """numba's one-time start-up (``warmup.py`` runs it on a background thread):
    the CPU typing and target contexts created, then their registries loaded
    (``refresh``, as the first compile or cache load does). Locks in numba's
    order: a context's creation takes the compiler lock inside its own lock,
    so the compiler lock is taken only once both contexts exist."""
    from numba.core.compiler_lock import global_compiler_lock
    from numba.core.registry import cpu_target

    typing, target = cpu_target.typing_context, cpu_target.target_context
    with global_compiler_lock:
        typing.refresh()
        target.refresh()


def locked(disp):
    """``disp`` loading or compiling a version only under the compile lock of
    its cache folder (``_numba_cache.compile_lock``: one process at a time)."""
    compile_ = disp.compile

    def compile(sig):
        with compile_lock(disp):
            return compile_(sig)

    disp.compile = compile
    return disp
