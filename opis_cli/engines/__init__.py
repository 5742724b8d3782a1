"""Engine factory: the name given to ``--engine`` -> an engine object.

An engine has ``name`` and ``run(prepared, GridSpec, progress) -> EngineOutput``
(see ``engine.py``). Heavy engines (knn, dask) are imported only when asked
for.
"""

from __future__ import annotations

from ..errors import ConfigError

ENGINES = ("exact", "knn", "dask")


def make_engine(name: str, *, block_bytes: int, k: int = 100, index: str = "hnsw",
                scheduler: str | None = None, workers: int | None = None):
    """Build the engine called ``name`` with the CLI's options."""
    if name == "exact":
        from .exact import ExactEngine

        return ExactEngine(block_bytes=block_bytes)
    if name == "knn":
        from .knn import KnnEngine

        return KnnEngine(k=k, index=index, block_bytes=block_bytes)
    if name == "dask":
        from .dask import DaskEngine  # says how to install dask when it is missing

        return DaskEngine(block_bytes=block_bytes, scheduler=scheduler, workers=workers)
    raise ConfigError(f"--engine {name!r}: expected one of {', '.join(ENGINES)}")
