"""The engines: the name given to ``--engine`` -> an :class:`~.base.Engine`.

``base.py`` holds what every engine shares (the ``Engine`` protocol,
``GridSpec``, ``EngineOutput`` with tp/fp counts, the key space, the tile
shape); ``exact.py`` (+ its compiled ``_kernels.py``), ``knn.py``, ``dask.py``
and ``sampled.py`` (estimates, SPEC 15) are the engines; ``memory.py`` the
exact engine's memory model.
Heavy engines (knn: faiss, dask: distributed) and the compiled kernels are
imported only when asked for: importing this package loads no numba.
"""

from __future__ import annotations

from ..errors import ConfigError
from ..options import ENGINES, NEGATIVES_PER_QUERY, RETRIEVAL_QUERIES, SEED
from .base import Engine


def make_engine(name: str, *, block_bytes: int, k: int = 100, index: str = "hnsw",
                scheduler: str | None = None, workers: int | None = None,
                negatives_per_query: int = NEGATIVES_PER_QUERY,
                retrieval_queries: int = RETRIEVAL_QUERIES, seed: int = SEED) -> Engine:
    """Build the engine called ``name`` with the CLI's options.

    ``block_bytes`` goes to every engine; ``k`` and ``index`` to knn;
    ``scheduler`` and ``workers`` to dask; ``negatives_per_query``,
    ``retrieval_queries`` and ``seed`` to sampled. Raises ``ConfigError`` for an
    unknown name (and for options the engine rejects).
    """
    if name == "exact":
        from .exact import ExactEngine

        return ExactEngine(block_bytes=block_bytes)
    if name == "knn":
        from .knn import KnnEngine

        return KnnEngine(k=k, index=index, block_bytes=block_bytes)
    if name == "dask":
        from .dask import DaskEngine  # says how to install dask when it is missing

        return DaskEngine(block_bytes=block_bytes, scheduler=scheduler, workers=workers)
    if name == "sampled":
        from .sampled import SampledEngine

        return SampledEngine(negatives_per_query=negatives_per_query,
                             retrieval_queries=retrieval_queries, seed=seed,
                             block_bytes=block_bytes)
    raise ConfigError(f"--engine {name!r}: expected one of {', '.join(ENGINES)}")
