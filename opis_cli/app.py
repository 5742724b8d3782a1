"""The use cases of the commands: read an input and evaluate it, or read a saved result.

What ``opis evaluate``, ``compare``, ``gate`` and ``calibrate`` do with a path
between parsing their options and showing the outcome; the command line
(``opis_cli.cli``) and the gate (``opis_cli.gate``) call these, never
``read_dataset`` or ``opis_cli.evaluate`` on a path themselves:

- :func:`load_dataset`: a path read with one :class:`~opis_cli.io.ReadOptions`;
- :func:`evaluate_file`: a path read and evaluated (:func:`opis_cli.evaluate`);
- :func:`evaluate_shards`: a Parquet file or folder that the workers of a
  shard-reading engine read themselves (:func:`reads_shards` says when);
- :func:`measure_file`: a path measured at one distance threshold;
- :func:`load_result`: a result JSON, its stored bootstrap and its curves
  table, as a :class:`Loaded` side (:func:`evaluated` wraps a fresh result);
- :func:`compare_sides`: both sides of ``opis compare``, each read or
  evaluated.

No typer, no rich, no printing: functions return results and the warnings
for the caller to show.
"""

from __future__ import annotations

import json
import warnings as _warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from . import options as opt
from .errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from .engines.base import Progress
    from .io import Dataset, ReadOptions
    from .metrics.bootstrap import Bootstrap
    from .results import EvaluationResult


# ------------------------------------------------------------------ embeddings


def load_dataset(path: str | Path, read: "ReadOptions", *,
                 progress: "Progress | None" = None, owned: bool = False) -> "Dataset":
    """``path`` read with ``read``; ``progress`` gets the reader's stage as
    ``"reading"``. ``owned``: see :func:`opis_cli.io.read_dataset`."""
    from .engines import warmup
    from .io import read_dataset

    warmup.start(warmup.input_bytes(str(path)))  # numba's start-up while the rows are read
    cb = (lambda done, total: progress("reading", done, total)) if progress else None
    return read_dataset(str(path), read, progress=cb, owned=owned)


def sources_of(ds: Any) -> list[dict[str, Any]]:
    """The provenance entries (``path``, ``sha256``, ``size_bytes``) of every file read."""
    return [{"path": s.path, "sha256": s.sha256, "size_bytes": s.size_bytes}
            for s in ds.sources]


def _evaluate(path: str | Path, ds: Any, sources: list, read: "ReadOptions",
              progress: "Progress | None", **options: Any
              ) -> tuple["EvaluationResult", list[str]]:
    """:func:`opis_cli.evaluate` on what was read, and its warnings (each once)."""
    from .api import evaluate

    try:
        with _warnings.catch_warnings(record=True) as caught:
            _warnings.simplefilter("always")
            result = evaluate(ds.embeddings, ds.labels, groups=ds.groups, is_query=ds.is_query,
                              is_gallery=ds.is_gallery, progress=progress, sources=sources,
                              group_column=read.group_column, **options)
    except InputError as e:
        raise InputError(f"{path}: {e}") from e
    shown: list[str] = []
    for w in caught:
        msg = " ".join(str(w.message).split())
        if msg not in shown and issubclass(w.category, UserWarning):
            shown.append(msg)
    return result, shown


def evaluate_file(path: str | Path, read: "ReadOptions | None" = None, *,
                  progress: "Progress | None" = None,
                  **options: Any) -> tuple["EvaluationResult", list[str]]:
    """Read one embeddings input and evaluate it with :func:`opis_cli.evaluate`.

    Returns the result and the engine's warnings (e.g. knn truncation), each
    once, whitespace collapsed, for the caller to show. ``progress`` gets the
    reader's stage as ``"reading"``. The embeddings are read into an array of
    their own and handed over (``copy=False``): the rows are held once.
    """
    from .io import ReadOptions

    read = read or ReadOptions()
    ds = load_dataset(path, read, progress=progress, owned=True)
    return _evaluate(path, ds, sources_of(ds), read, progress, copy=False, **options)


def reads_shards(path: str | Path, read: "ReadOptions", engine: str) -> bool:
    """Whether the workers of ``engine`` read this input themselves: an engine
    with the ``shards`` capability, on Parquet (a file or a folder) with the
    embeddings in one list column and the labels in the same files
    (:mod:`opis_cli.io.shards`)."""
    from .engines.registry import capabilities

    if not capabilities(engine).shards or read.labels is not None:
        return False
    if read.embedding_columns is not None or read.format_options:
        return False
    if read.format not in (None, "parquet"):
        return False
    from .io.formats import detect

    return detect(str(path), read.format).name == "parquet"


def evaluate_shards(path: str | Path, read: "ReadOptions", *,
                    progress: "Progress | None" = None, **options: Any) -> "EvaluationResult":
    """:func:`opis_cli.evaluate` of a Parquet input that the engine's workers
    read (:func:`reads_shards`): here only the role columns and the footers
    are read (:func:`opis_cli.io.shards.open_parquet`). The engine's warnings
    are left to the caller's warning filters."""
    from .api import evaluate
    from .io.dataset import _source_file
    from .io.shards import open_parquet

    ds = open_parquet(str(path), embedding_column=read.embedding_column,
                      label_column=read.label_column, group_column=read.group_column,
                      query_column=read.query_column, gallery_column=read.gallery_column)
    sources = []
    for f in ds.files:
        s = _source_file(f)
        sources.append({"path": s.path, "sha256": s.sha256, "size_bytes": s.size_bytes})
    try:
        return evaluate(ds.embeddings, ds.labels, groups=ds.groups, is_query=ds.is_query,
                        is_gallery=ds.is_gallery, progress=progress, sources=sources,
                        group_column=read.group_column, **options)
    except InputError as e:
        raise InputError(f"{path}: {e}") from e


def measure_file(path: str | Path, threshold: float, read: "ReadOptions | None" = None, *,
                 options: Mapping[str, Any] | None = None,
                 block_bytes: int = opt.BLOCK_BYTES) -> Any:
    """One embeddings input at one distance threshold: :func:`opis_cli.api.operating_point`
    with the ``metric``, ``utility`` and ``beta`` of ``options`` (how it was evaluated).

    The group column of ``read`` is not read (an operating point has no groups).
    """
    from dataclasses import replace

    from .api import operating_point
    from .io import ReadOptions

    o = dict(options or {})
    ds = load_dataset(path, replace(read or ReadOptions(), group_column=None))
    try:
        return operating_point(ds.embeddings, ds.labels, threshold, is_query=ds.is_query,
                               is_gallery=ds.is_gallery, metric=o.get("metric", opt.METRIC),
                               utility=o.get("utility", opt.UTILITY),
                               beta=o.get("beta", opt.BETA), block_bytes=block_bytes)
    except InputError as e:
        raise InputError(f"{path}: {e}") from e


# ------------------------------------------------------------------ saved results


@dataclass(frozen=True)
class Loaded:
    """One side of a gate or a comparison: a result (in-process or read from
    JSON), its curves and bootstrap."""

    name: str
    result: Any
    bootstrap: Any | None = None
    curves: Any | None = None
    #: ``at(threshold) -> OperatingPoint``: measures this side at any distance
    #: threshold (embeddings sides; None for a result JSON).
    at: Callable[[float], Any] | None = None


def load_result(path: str | Path, curves: str | Path | None = None) -> Loaded:
    """Read a result JSON (``opis evaluate --json``), its stored bootstrap and,
    when ``curves`` is given, its per-class curves table (``--curves``)."""
    from .io import read_curves, read_result
    from .io.curves import curves_from_table
    from .metrics.bootstrap import Bootstrap

    result = read_result(path)
    # read_result validated the document; the optional bootstrap block is ours to read.
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    boot = doc.get("bootstrap")
    boot = Bootstrap.from_dict(boot, f"{path}: bootstrap") if boot else None
    cv = None
    if curves is not None:
        cv = curves_from_table(read_curves(curves), result, level="class", source=str(curves))
    return Loaded(str(path), result, boot, cv)


def evaluated(name: str, result: "EvaluationResult",
              bootstrap: "Bootstrap | None" = None,
              at: Callable[[float], Any] | None = None) -> Loaded:
    """An in-process result (its curves come with it); ``at`` measures it at any
    threshold (see :func:`measure_file`)."""
    return Loaded(name, result, bootstrap, result.curves, at)


def is_result_json(path: str | Path) -> bool:
    """Whether a side names a result JSON (else an embeddings input)."""
    return Path(path).suffix.lower() == ".json"


# ------------------------------------------------------------------ opis compare's sides


def options_from(result: "EvaluationResult") -> dict[str, Any]:
    """Evaluation options a result was measured with (to evaluate the other side alike)."""
    opts = result.options or {}
    out = {"metric": result.metric, "utility": result.utility, "beta": result.beta,
           "epsilon": result.epsilon,
           "threshold_policy": opts.get("threshold_policy",
                                        result.recommended_threshold.policy)}
    if opts.get("far_range"):
        out["far_range"] = tuple(opts["far_range"])
    return out


def evaluation_options(reference: Loaded | None, given: Mapping[str, Any]) -> dict[str, Any]:
    """Options for the embeddings sides: the defaults, overridden by the reference
    result's (a result JSON side), overridden by those ``given`` (not None)."""
    opts: dict[str, Any] = {"metric": opt.METRIC, "utility": opt.UTILITY, "beta": opt.BETA,
                            "epsilon": opt.EPSILON, "threshold_policy": opt.THRESHOLD_POLICY,
                            "far_range": opt.range_text(opt.FAR_RANGE)}
    if reference is not None:
        opts.update(options_from(reference.result))
    opts.update({k: v for k, v in given.items() if v is not None})
    return opts


#: ``evaluate(path, options) -> Loaded``: evaluates an embeddings side with
#: :func:`opis_cli.evaluate` options (the caller adds how to read and show it).
EvaluateSide = Callable[[Path, dict], Loaded]


def compare_sides(baseline: Path, candidate: Path, evaluate: EvaluateSide, *,
                  given: Mapping[str, Any] | None = None, calibration_range: Any = None,
                  num_thresholds: int | None = None, same_thresholds: bool = False,
                  base_curves: Path | None = None,
                  cand_curves: Path | None = None) -> tuple[Loaded, Loaded]:
    """Both sides of ``opis compare``: result JSONs are read (with their curves
    tables when given), embeddings inputs evaluated with ``evaluate``.

    An embeddings side gets the options ``given`` (not None), else those of
    the result JSON side (the baseline's first), else the defaults. By
    default each side is evaluated on its own calibration range from the same
    ``far_range`` (SPEC 5), so that OPIS compares like with like. With
    ``same_thresholds`` it is evaluated on the other side's calibration range
    and number of thresholds instead (the baseline's; the candidate JSON's
    when only the baseline is an embeddings input): both share the distance
    thresholds. An explicit ``calibration_range`` applies to both.
    """
    base = load_result(baseline, base_curves) if is_result_json(baseline) else None
    cand = load_result(candidate, cand_curves) if is_result_json(candidate) else None
    opts = evaluation_options(base or cand, given or {})

    def run(path: Path, other: Loaded | None) -> Loaded:
        cal, k = calibration_range, num_thresholds
        if other is not None:
            k = k or len(other.result.thresholds)
        if cal is None and same_thresholds and other is not None:
            cr = other.result.calibration_range
            cal = (cr.lower, cr.upper)
        return evaluate(path, dict(opts, calibration_range=cal,
                                   num_thresholds=k or opt.NUM_THRESHOLDS))

    if base is None:
        base = run(baseline, cand)
    if cand is None:
        cand = run(candidate, base)
    return base, cand
