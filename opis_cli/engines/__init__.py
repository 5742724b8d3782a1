"""The engines: the name given to ``--engine`` -> an :class:`~.base.Engine`.

``base.py`` holds what every engine shares (the ``Engine`` protocol,
``GridSpec``, ``EngineOutput`` with tp/fp counts, the key space, the tile
shape); ``exact.py`` (+ its compiled ``_kernels.py``), ``knn.py``, ``dask.py``
and ``sampled.py`` (estimates, SPEC 15) are the engines, ``reference.py`` the
float64 oracle of the tests (the exact engine's memory model is ``opis_cli/memory.py``).
``registry.py`` declares each engine (name, help, options, capabilities):
:func:`make_engine` builds one from its entry.
Heavy engines (knn: faiss, dask: distributed) and the compiled kernels are
imported only when asked for: importing this package loads no numpy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .registry import ENGINES, Capabilities, EngineEntry, capabilities, entry, make_engine

if TYPE_CHECKING:  # pragma: no cover
    from .base import Engine

__all__ = ["ENGINES", "Capabilities", "Engine", "EngineEntry", "capabilities", "entry",
           "make_engine"]


def __getattr__(name: str):
    # ``Engine`` lives in base.py, which imports numpy: loaded when asked for,
    # so that the command line reads the registry (its --help) without numpy
    if name == "Engine":
        from .base import Engine

        return Engine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
