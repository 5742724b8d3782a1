"""The engine registry: every engine's name, help, options and capabilities, declared once.

The API and the command line never compare engine names: they ask an
entry's :class:`Capabilities` (does it take calibration offsets? read
Parquet shards on its workers? count every pair?), build an engine with
:func:`make_engine` from the entry's own options, and show the entry's
help in ``opis evaluate --help``. Adding an engine is one module with a
class that has ``name`` and ``run(prep, spec, progress) -> EngineOutput``
(``base.Engine``) plus one :class:`EngineEntry` in :data:`ENGINES`.

This module imports no numpy and no engine: an engine's module is imported
only when it is built (faiss, Dask and the compiled kernels stay unloaded).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, fields
from typing import Any, Mapping

from ..errors import ConfigError
from .. import options as opt


@dataclass(frozen=True)
class Capabilities:
    """What an engine can do; the callers decide by these, never by its name."""

    #: takes a calibration's per-row offsets (SPEC 11): ``--calibration``
    offsets: bool = False
    #: its workers read Parquet shards themselves (``opis_cli.io.shards``)
    shards: bool = False
    #: measures the verification view (SPEC 14) when asked
    verification: bool = False
    #: counts every pair (no sampling, no approximate search)
    exact: bool = False
    #: decides as the float64 distances of SPEC 2 do: the same bytes on every machine
    machine_independent: bool = False
    #: reports estimates with intervals (SPEC 15, ``result.estimate``)
    estimates: bool = False
    #: can run the diagnosis pass (SPEC 16)
    diagnosis: bool = False

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


@dataclass(frozen=True)
class EngineOption:
    """One option of an engine: the constructor's keyword, its default and help.

    ``flag`` is the command-line option that sets it (``--k``)."""

    name: str
    default: Any
    help: str
    flag: str


@dataclass(frozen=True)
class EngineEntry:
    """One registered engine: ``module.cls(block_bytes=..., **options)`` builds it."""

    name: str
    #: one line for ``--engine``'s help
    help: str
    module: str
    cls: str
    options: tuple[EngineOption, ...] = ()
    capabilities: Capabilities = Capabilities()
    #: what the result's ``provenance.index`` says (None: the engine's name)
    index: str | None = None

    def build(self, *, block_bytes: int, **given: Any):
        """The engine, with ``block_bytes`` and the values of its own options
        from ``given`` (defaults for those not given; others' options ignored)."""
        kwargs = {o.name: given.get(o.name, o.default) for o in self.options}
        cls = getattr(importlib.import_module(self.module), self.cls)
        return cls(block_bytes=block_bytes, **kwargs)


_PKG = __name__.rsplit(".", 1)[0]

#: every engine ``--engine`` accepts, in the order the help lists them
ENGINES: tuple[EngineEntry, ...] = (
    EngineEntry(
        "exact", "every pair (default)", f"{_PKG}.exact", "ExactEngine",
        capabilities=Capabilities(offsets=True, verification=True, exact=True,
                                  machine_independent=True, diagnosis=True),
        index="exact (all pairs, BLAS inner products)"),
    EngineEntry(
        "knn", "approximate, K FAISS neighbours", f"{_PKG}.knn", "KnnEngine",
        options=(EngineOption("k", opt.K, "Neighbours per query for --engine knn.", "--k"),
                 EngineOption("index", opt.INDEX,
                              f"FAISS index for --engine knn: {', '.join(opt.INDEXES[:-1])} or "
                              f"{opt.INDEXES[-1]}.", "--index")),
        capabilities=Capabilities(diagnosis=True)),
    EngineEntry(
        "dask", "exact, distributed", f"{_PKG}.dask", "DaskEngine",
        options=(EngineOption("scheduler", None, "Dask scheduler address for --engine dask "
                              "(default: a local cluster).", "--scheduler"),
                 EngineOption("workers", None, "Worker processes of the local Dask cluster "
                              "for --engine dask.", "--workers"),
                 EngineOption("worker_bytes", opt.WORKER_MIB * 2**20,
                              "Memory budget of one Dask worker when the workers read a "
                              "Parquet input themselves.", "--worker-mib")),
        capabilities=Capabilities(offsets=True, shards=True, verification=True, exact=True,
                                  machine_independent=True, diagnosis=True)),
    EngineEntry(
        "sampled", "sampled negatives, estimates with intervals",
        f"{_PKG}.sampled", "SampledEngine",
        options=(EngineOption("negatives_per_query", opt.NEGATIVES_PER_QUERY,
                              "Gallery rows drawn per query for --engine sampled (its "
                              "negatives are those of other classes).", "--negatives-per-query"),
                 EngineOption("retrieval_queries", opt.RETRIEVAL_QUERIES,
                              "Queries whose R@k and MAP@R --engine sampled computes exactly "
                              "against the whole gallery.", "--retrieval-queries"),
                 EngineOption("seed", opt.SEED, "Seed of --engine sampled.", "--seed")),
        capabilities=Capabilities(estimates=True, diagnosis=True)),
    EngineEntry(
        "reference", "plain float64, slow (the tests' oracle)",
        f"{_PKG}.reference", "ReferenceEngine",
        capabilities=Capabilities(offsets=True, exact=True, machine_independent=True),
        index="reference (all pairs, float64 numpy)"),
)

_BY_NAME: Mapping[str, EngineEntry] = {e.name: e for e in ENGINES}

#: the names ``--engine`` accepts
NAMES: tuple[str, ...] = tuple(_BY_NAME)


def entry(name: str) -> EngineEntry:
    """The entry of engine ``name``; ``ConfigError`` for an unknown name."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ConfigError(f"--engine {name!r}: expected one of {', '.join(NAMES)}") from None


def capabilities(engine: Any) -> Capabilities:
    """The capabilities of an engine object or name: its registry entry's, or
    none at all for an engine that is not registered (a custom one)."""
    name = engine if isinstance(engine, str) else getattr(engine, "name", None)
    e = _BY_NAME.get(name) if isinstance(name, str) else None
    return e.capabilities if e is not None else Capabilities()


def with_capability(cap: str) -> tuple[str, ...]:
    """Names of the engines that have capability ``cap``, in registry order."""
    if cap not in Capabilities.names():
        raise ValueError(f"unknown capability {cap!r}")
    return tuple(e.name for e in ENGINES if getattr(e.capabilities, cap))


def either(names: tuple[str, ...]) -> str:
    """``"a"``, ``"a or b"``, ``"a, b or c"``."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def provenance_index(engine_name: str) -> str:
    """What the result's ``provenance.index`` says of an engine (before its notes)."""
    e = _BY_NAME.get(engine_name)
    return e.index if e is not None and e.index is not None else engine_name


def engine_help() -> str:
    """``--engine``'s help: every entry's name and line."""
    return "; ".join(f"{e.name}: {e.help}" for e in ENGINES) + "."


def make_engine(name: str, *, block_bytes: int, **options: Any):
    """Build the engine called ``name``: ``block_bytes`` and, of ``options``,
    those its entry declares (the others are ignored, so that a caller may
    pass every engine's command-line values). Raises ``ConfigError`` for an
    unknown name (and for options the engine rejects)."""
    return entry(name).build(block_bytes=block_bytes, **options)
