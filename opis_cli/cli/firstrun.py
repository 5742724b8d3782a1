"""The first run: say that the kernels compile, once, instead of looking hung.

numba compiles the exact engine's kernels on their first call and keeps them
in its on-disk cache (``opis_cli._numba_cache``); on a cold cache the CLI says
so on stderr when the computation starts (after the input is read and
checked), instead of a bar that sits at 0% for half a minute.
"""

from __future__ import annotations

#: seconds the first compile takes on a 2-core machine (the sample, exact engine)
COMPILE_SECONDS = 40
#: engines whose run calls the compiled kernels of ``engines._kernels``
COMPILED_ENGINES = ("exact", "dask")


def kernels_cold() -> bool:
    """Whether the exact engine's entry kernel has no compiled version on disk."""
    from .._numba_cache import cached
    from ..engines import _kernels

    return not cached(_kernels.process_block)


def with_compile_note(callback, enabled: bool = True):
    """A progress callback that first says ``compiling kernels (first run only, about
    N s)`` on stderr when the computation starts (the first stage after "reading")
    on a cold cache, then calls ``callback`` (None: no bar). ``enabled`` False
    (--quiet, an engine without compiled kernels) returns ``callback`` itself."""
    if not enabled:
        return callback
    said = [False]

    def progress(stage: str, done: int, total: int) -> None:
        if not said[0] and stage != "reading":
            said[0] = True
            if kernels_cold():
                from ..render.terminal import err_console

                err_console.print(f"compiling kernels (first run only, about "
                                  f"{COMPILE_SECONDS} s)", soft_wrap=True)
        if callback is not None:
            callback(stage, done, total)

    return progress
