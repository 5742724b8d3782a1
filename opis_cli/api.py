"""``evaluate()``: embeddings and labels in, a typed ``EvaluationResult`` out.

Data flows one way: prepare -> engine counts -> utility curves -> OPIS and
threshold -> result. No file I/O and no terminal output happen here; the
optional ``progress`` callback is how a caller (the CLI) shows progress.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata as _metadata
import platform
from contextlib import nullcontext
from dataclasses import replace
from typing import TYPE_CHECKING, Sequence

import numpy as np

from . import counts
from ._version import __version__
from . import options as opt
from .engines.base import Engine, EngineOutput, GridSpec, Progress
from .engines.registry import capabilities, either, provenance_index, with_capability
from .errors import ConfigError, InputError
from .metrics.consistency import consistency, retrieval as retrieval_metrics
from .metrics.fairness import fairness as fairness_of
from .metrics.verification import eer as eer_of, verification as verification_of
from .metrics.threshold import Policy, class_rates, global_far, recommend
from .metrics.threshold import operating_point as point_at
from .metrics.utility import utility as utility_curves
from .prepare import Prepared, prepare
from .results import (CalibrationRange, ClassSummary, ConsistencyBlock, Curves, DistanceHistogram,
                      EvaluationResult, OperatingPoint)

if TYPE_CHECKING:  # pragma: no cover
    from .calibration import Calibration


#: The distributions that install the ``faiss`` module, in the order asked.
_FAISS_DISTRIBUTIONS = ("faiss-cpu", "faiss-gpu", "faiss-gpu-cu12", "faiss-gpu-cu11", "faiss")


def _distribution_version(names: Sequence[str]) -> str | None:
    """The version of the first of ``names`` that is installed, or None."""
    for name in names:
        try:
            return _metadata.version(name)
        except _metadata.PackageNotFoundError:
            continue
    return None


def _versions() -> dict:
    """Versions of the libraries behind the numbers, for provenance, read from the
    installed distributions: no need to import numba or faiss (0.3 s) for a version
    string. A faiss without distribution metadata (a conda build) is asked itself."""
    numba_version = _distribution_version(("numba",)) or "unknown"
    faiss_version = _distribution_version(_FAISS_DISTRIBUTIONS)
    if faiss_version is None:  # pragma: no cover - installed without metadata
        import faiss

        faiss_version = getattr(faiss, "__version__", "unknown")
    return {"python": platform.python_version(), "numpy": np.__version__,
            "faiss": faiss_version, "numba": numba_version}


def evaluate(
    embeddings,
    labels: Sequence,
    reference=None,
    reference_labels: Sequence | None = None,
    *,
    groups: Sequence | None = None,
    is_query: Sequence[bool] | None = None,
    is_gallery: Sequence[bool] | None = None,
    metric: str = opt.METRIC,
    far_range: tuple[float, float] | str = opt.FAR_RANGE,
    calibration_range: tuple[float, float] | str | None = None,
    num_thresholds: int = opt.NUM_THRESHOLDS,
    utility: str = opt.UTILITY,
    beta: float = opt.BETA,
    epsilon: float = opt.EPSILON,
    threshold_policy: str = opt.THRESHOLD_POLICY,
    fairness_alpha: float = opt.FAIRNESS_ALPHA,
    verification: bool = opt.VERIFICATION,
    dcf: tuple[float, float, float] | str = opt.DCF,
    block_bytes: int = opt.BLOCK_BYTES,
    engine: Engine | None = None,
    progress: Progress | None = None,
    sources: Sequence[dict] = (),
    group_column: str | None = None,
    timestamp: bool = True,
    calibration: "Calibration | None" = None,
    calibration_source: dict | None = None,
    copy: bool = True,
    min_class_rows: int = opt.MIN_CLASS_ROWS,
    include: Sequence[str] | None = None,
    diagnose: bool = False,
    threshold: float | None = None,
    impostors: int = 5,
    overlap_level: float = 0.5,
) -> EvaluationResult:
    """Measure threshold consistency of an embedding model (SPEC.md).

    Two call shapes: one set of rows, each both query and gallery unless the
    masks say otherwise, ``evaluate(embeddings, labels, is_query=...,
    is_gallery=...)``; or pytorch-metric-learning's, ``evaluate(query,
    query_labels, reference, reference_labels)``.

    Parameters
    ----------
    embeddings : (N, D) array of float16/32/64 (a memmap is fine); the
        queries when ``reference`` is given
    labels : N labels (any hashable; compared as strings)
    reference, reference_labels : PML's reference set (the gallery). The rows
        are then the query rows followed by the reference rows, ``is_query``
        true for the first block only and ``is_gallery`` for the second only,
        so a reference row identical to a query is an ordinary pair at
        distance 0 (PML's ``ref_includes_query=False``). When ``reference``
        *is* ``embeddings`` (the same object), the rows are used once, each
        both query and gallery, self-pairs excluded (PML's
        ``ref_includes_query=True``); ``reference_labels`` must then equal
        ``labels``. ``groups`` then has one value per row of the
        concatenation; ``is_query``/``is_gallery`` cannot be combined with it
    groups : optional N group values for the per-group block (SPEC 7)
    is_query, is_gallery : optional boolean masks (default: every row is both)
    metric : ``"cosine"`` (d = 1 - cos) or ``"l2"``; smaller is closer
    far_range : global FAR bounds ``(A, B)`` defining the calibration range
    calibration_range : explicit ``(lo, hi)`` distances; overrides ``far_range``
    num_thresholds : grid size K (both ends included)
    utility : ``"tpr-tnr"`` or ``"precision-recall"``; ``beta`` its F-beta weight
    epsilon : fraction of worst classes for epsilon-OPIS
    threshold_policy : ``max-mean-utility``, ``max-worst-utility`` or ``far:F``
    fairness_alpha : weight of FAR against FRR in FDR, GARBE and the inequity
        rate (SPEC 13), in [0, 1]
    verification : also measure the verification view (SPEC 14: EER, minDCF,
        FNMR at FMR, per group EER); the exact engines spend one more pass
    dcf : ``(p_target, c_miss, c_fa)`` or ``"P:C_MISS:C_FA"`` of minDCF
    block_bytes : memory for the inner-product tiles held at once (``--block-mib``
        MiB; results do not depend on it)
    engine : an :class:`~opis_cli.engines.base.Engine` (``run(prepared, GridSpec, progress) -> EngineOutput``)
        (default: the exact engine)
    progress : ``callback(stage, done, total)``
    sources : provenance entries for the input files (path, sha256, ...)
    calibration : a :class:`~opis_cli.calibration.Calibration` (SPEC 11): every
        number is then computed on the adjusted distances ``d - a_q - b_g``
        (exact and dask engines); ``calibration_source`` (path, sha256) goes
        into the provenance with the method and the uncalibrated rows
    min_class_rows : SPEC 3's ``--min-class-rows``: a class (or group) with
        fewer rows is excluded (not evaluated, listed among the excluded,
        in no average: not in OPIS, the FAR order statistic of the range nor
        the retrieval means); its rows stay negatives of the others. The
        default 2 adds nothing to ``P > 0, M > 0``
    include : the parts to compute, from ``"consistency"`` (always computed),
        ``"retrieval"`` and ``"verification"``; None: consistency and
        retrieval (verification as ``verification`` says). Without
        ``"retrieval"`` the neighbour ranking is skipped: ``result.retrieval``
        is None (JSON ``"retrieval": null``; gate metrics ``recall_at_*``,
        ``map_at_r``, ``r_precision`` NaN) and every per-class ``recall_at_1``
        is None. ``"verification"`` turns the verification view on
    copy : False hands ``embeddings`` over: a writeable, C-contiguous float32
        array (not a memmap) is then normalised and put into class order in
        place, so that no second copy of the rows is made (at 1M x 384 the
        sampled engine peaks 1.4 GiB lower); the array's contents are
        undefined afterwards. Other arrays, and any run with a
        ``calibration``, are copied as with True. Results are identical.
    diagnose : also diagnose where the threshold fails (SPEC 16: impostor
        classes, overlapping classes, duplicate rows, rejected rows, suspect
        labels; ``result.diagnosis``), in one more pass: exact with the exact
        and Dask engines, from the candidates with the knn engine (lower
        bounds, ``diagnosis.coverage``), estimated from the draws with the
        sampled engine (``diagnosis.estimate``)
    threshold : the distance of the diagnosis (default: the recommended threshold)
    impostors : impostor classes listed per class (``k``, default 5)
    overlap_level : the overlap level ``L`` in (0, 1] (default 0.5)

    Returns
    -------
    EvaluationResult

    Raises
    ------
    InputError, ConfigError
        One-line messages; the CLI turns them into exit code 2.
    """
    # Every option is checked here, before any work (constraints: opis_cli.options).
    want_retrieval, verification = _parts(include, verification)
    if reference is not None or reference_labels is not None:
        embeddings, labels, is_query, is_gallery = _pml_shape(
            embeddings, labels, reference, reference_labels, is_query, is_gallery)
    opt.validate(metric=metric, utility=utility, beta=beta, epsilon=epsilon,
                 num_thresholds=num_thresholds, fairness_alpha=fairness_alpha,
                 min_class_rows=min_class_rows)
    policy = Policy.parse(threshold_policy)
    dcf = opt.parse_dcf(dcf)
    far = opt.check_far_range(opt.parse_range(far_range, "--far-range"))
    cal = opt.parse_range(calibration_range, "--calibration-range")
    _check_diagnosis(diagnose, threshold, impostors, overlap_level, metric, engine, calibration)
    if getattr(embeddings, "sharded", False):
        # embeddings left in their files for the Dask workers (opis_cli.io.shards)
        if not capabilities(engine).shards:
            raise ConfigError("this input is read by the Dask workers: it needs "
                              "engine=DaskEngine(...) (--engine "
                              f"{either(with_capability('shards'))})")
        if diagnose:
            raise ConfigError("--diagnose needs the rows in this process: the Dask workers "
                              "reading Parquet shards do not diagnose yet; read the input "
                              "into memory (another --engine, or evaluate() on the arrays)")
        prep = embeddings.arrange(labels, metric=metric, groups=groups, is_query=is_query,
                                  is_gallery=is_gallery)
    else:
        prep = prepare(embeddings, labels, metric=metric, groups=groups, is_query=is_query,
                       is_gallery=is_gallery, consume=not copy and calibration is None)
    P, M = prep.class_pair_counts()
    evaluated = counts.evaluated(P, M, prep.class_rows, min_class_rows)
    if evaluated.sum() < 2:
        if len(P) < 2:  # one label for every row: no negative pair at all
            raise InputError(f"{len(P)} class found, need at least 2 (OPIS compares the "
                             "classes at one threshold; every row has the same label)")
        need = (f", and at least {min_class_rows} rows (--min-class-rows)"
                if min_class_rows > 2 else "")
        raise InputError(
            f"only {int(evaluated.sum())} class(es) can be evaluated (a class needs at least one "
            f"positive and one negative pair, i.e. two rows and another class{need}); "
            "need at least 2")
    if engine is None:
        from .engines.exact import ExactEngine  # loads the compiled kernels

        engine = ExactEngine(block_bytes=block_bytes)
    cal_info = None
    if calibration is not None:
        prep, cal_info = _calibrated(prep, calibration, embeddings, labels, groups,
                                     getattr(engine, "name", "custom"), calibration_source)
    spec = GridSpec(num_thresholds=int(num_thresholds), far_range=far, calibration_range=cal,
                    verification=dcf if verification else None,
                    min_class_rows=int(min_class_rows), retrieval=want_retrieval)
    if diagnose and hasattr(engine, "keep_candidates"):
        engine.keep_candidates = True  # the knn engine diagnoses from its search's candidates
    # an engine with a ``session`` (the Dask engine's cluster) keeps it open for
    # the run and the diagnosis pass, and closes it here, on return or raise
    session = getattr(engine, "session", None)
    with session() if session is not None else nullcontext():
        out = engine.run(prep, spec, progress)
        result = build_result(prep, out, spec=spec, metric=metric, utility=utility, beta=beta,
                              epsilon=epsilon, policy=policy,
                              engine_name=getattr(engine, "name", "custom"),
                              sources=sources, group_column=group_column, timestamp=timestamp,
                              fairness_alpha=fairness_alpha, calibration_info=cal_info)
        if diagnose:
            result = _with_diagnosis(result, prep, threshold, impostors, overlap_level,
                                     evaluated, block_bytes, progress, engine)
    return result


def _check_diagnosis(diagnose, threshold, impostors, overlap_level, metric, engine,
                     calibration) -> None:
    """The diagnosis options (SPEC 16), checked before any work."""
    if not diagnose:
        if threshold is not None:
            raise ConfigError("--threshold is the distance of the diagnosis: add --diagnose")
        return
    if engine is not None and not capabilities(engine).diagnosis:
        raise ConfigError(f"--diagnose needs --engine {either(with_capability('diagnosis'))} "
                          f"(the {engine.name} engine does not count every pair at one "
                          "threshold)")
    if calibration is not None:
        raise ConfigError("--diagnose does not take a --calibration (it diagnoses the raw "
                          "distances); run it without one")
    if isinstance(impostors, bool) or not isinstance(impostors, (int, np.integer)) \
            or impostors < 1:
        raise ConfigError(f"--impostors {impostors!r}: expected a whole number >= 1")
    try:
        lv = float(overlap_level)
    except (TypeError, ValueError):
        lv = float("nan")
    if not (0.0 < lv <= 1.0):
        raise ConfigError(f"--overlap-level {overlap_level!r}: expected a number in (0, 1]")
    if threshold is not None:
        try:
            t = float(threshold)
        except (TypeError, ValueError):
            t = float("nan")
        if not np.isfinite(t):
            raise ConfigError(f"--threshold {threshold!r}: expected a finite distance")
        if metric == "l2" and t < 0:
            raise ConfigError(f"--threshold {t:g}: an l2 distance threshold must be >= 0")


def _with_diagnosis(result: EvaluationResult, prep: Prepared, threshold, k, level,
                    evaluated, block_bytes, progress, engine=None) -> EvaluationResult:
    """``result`` with its SPEC 16 diagnosis at ``threshold`` (default: recommended).

    An engine may run the pass itself (``engine.diagnosis_pass``, the
    signature of ``engines.diagnose.PassRunner``: the Dask engine maps it
    over its workers); by default it runs in this process."""
    from .engines.diagnose import diagnose as run_diagnosis

    t = result.recommended_threshold.value if threshold is None else float(threshold)
    diag = run_diagnosis(prep, t, k=int(k), level=float(level), evaluated=evaluated,
                         block_bytes=block_bytes, progress=progress,
                         run_pass=getattr(engine, "diagnosis_pass", None))
    options = {**result.options, "diagnose": True,
               "threshold": None if threshold is None else float(threshold),
               "impostors": int(k), "overlap_level": float(level)}
    prov = {**result.provenance, "passes": result.provenance.get("passes", 0) + 1,
            "options": options}
    return replace(result, diagnosis=diag, options=options, provenance=prov)


def _parts(include: Sequence[str] | None, verification: bool) -> tuple[bool, bool]:
    """(rank the neighbours?, the verification view?) from ``include=``."""
    if include is None:
        return True, bool(verification)
    if isinstance(include, str):
        include = (include,)
    for name in include:
        if name not in opt.INCLUDE:
            raise ConfigError(f"include {name!r}: expected some of {', '.join(opt.INCLUDE)}")
    return "retrieval" in include, bool(verification) or "verification" in include


def _values(v) -> list:
    """Labels as a list of plain values: an array or a (CPU) tensor of them
    gives its numbers (``3``, not ``tensor(3)``)."""
    return np.asarray(v).tolist() if hasattr(v, "__array__") else list(v)


def _pml_shape(query, query_labels, reference, reference_labels, is_query, is_gallery):
    """pytorch-metric-learning's ``(query, query_labels, reference, reference_labels)``
    as one set of rows and the query/gallery masks (see :func:`evaluate`)."""
    if reference is None or reference_labels is None:
        raise ConfigError("reference and reference_labels go together: give both or neither")
    if is_query is not None or is_gallery is not None:
        raise ConfigError("is_query/is_gallery describe one set of rows: with reference= "
                          "the first rows are the queries and the reference the gallery")
    if getattr(query, "sharded", False) or getattr(reference, "sharded", False):
        raise ConfigError("reference= takes in-memory arrays, not rows left in their files")
    query_labels, reference_labels = _values(query_labels), _values(reference_labels)
    nq, nr = len(query), len(reference)
    if len(query_labels) != nq:
        raise InputError(f"query_labels: {len(query_labels)} labels for {nq} query rows")
    if len(reference_labels) != nr:
        raise InputError(f"reference_labels: {len(reference_labels)} labels for {nr} "
                         "reference rows")
    if reference is query:  # PML's ref_includes_query=True: every row both, self excluded
        if [str(v) for v in query_labels] != [str(v) for v in reference_labels]:
            raise InputError("reference is the query array, so reference_labels must equal "
                             "query_labels")
        return (query if isinstance(query, np.ndarray) else np.asarray(query)), query_labels, \
            None, None
    q = np.asarray(query)
    r = np.asarray(reference)
    if q.ndim != 2 or r.ndim != 2 or q.shape[1] != r.shape[1]:
        raise InputError(f"query rows {q.shape} and reference rows {r.shape}: expected two "
                         "2-D arrays with the same number of columns")
    x = np.concatenate([q, r.astype(q.dtype, copy=False)])
    labels = [*query_labels, *reference_labels]
    is_q = np.zeros(nq + nr, bool)
    is_q[:nq] = True
    return x, labels, is_q, ~is_q


def _calibrated(prep: Prepared, calibration, embeddings, labels, groups, engine_name: str,
                source: dict | None) -> tuple[Prepared, dict]:
    """``prep`` with the calibration's per-row offsets, and its provenance entry."""
    from .calibration import check_applies

    if not capabilities(engine_name).offsets:
        raise ConfigError(f"--calibration needs --engine {either(with_capability('offsets'))} "
                          f"(the {engine_name} engine does not take per-row offsets)")
    check_applies(calibration, prep.metric, prep.dim)
    if getattr(embeddings, "sharded", False) and calibration.method.startswith("cluster"):
        raise ConfigError(f"--calibration {calibration.method} assigns rows by their embeddings, "
                          "which stay on the Dask workers here; use a global, per-class or "
                          "per-group calibration, or another input format")
    off = calibration.offsets(embeddings, labels, groups)
    info = {**(source or {}), "method": calibration.method,
            "target_far": calibration.target_far,
            "global_threshold": calibration.global_threshold,
            "uncalibrated_rows": off.uncalibrated}
    return prep.with_offsets(off.a, off.b), info


def operating_point(
    embeddings,
    labels: Sequence,
    threshold: float,
    *,
    is_query: Sequence[bool] | None = None,
    is_gallery: Sequence[bool] | None = None,
    metric: str = opt.METRIC,
    utility: str = opt.UTILITY,
    beta: float = opt.BETA,
    block_bytes: int = opt.BLOCK_BYTES,
    progress: Progress | None = None,
    calibration: "Calibration | None" = None,
    groups: Sequence | None = None,
) -> "OperatingPoint":
    """What one global distance threshold does on a model, counted exactly.

    The pairs and classes are those of :func:`evaluate` (SPEC 3); the counts
    are of pairs with distance ``<= threshold``, from one exact-engine pass
    over a two-point grid whose upper end is ``threshold``. This is how
    ``opis compare`` puts a candidate at the baseline's deployed threshold,
    which need not lie on the candidate's own grid.

    With a ``calibration`` (SPEC 11; ``groups`` for a per-group one) the
    distances are the adjusted ``d - a_q - b_g``: this is the deployed
    decision ``d' <= threshold`` at ``calibration.global_threshold``.

    Returns
    -------
    OperatingPoint
        Global TPR and FAR, the per-class FAR/FRR spread, the fraction of
        classes with FAR above twice the global one, and ``Ubar`` there.
    """
    from .engines.exact import ExactEngine

    opt.validate(metric=metric, utility=utility, beta=beta)
    t = float(threshold)
    if not np.isfinite(t):
        raise InputError(f"threshold {threshold!r}: expected a finite distance")
    if metric == "l2" and t <= 0 and calibration is None:
        raise InputError(f"threshold {t:g}: an l2 distance threshold must be positive")
    prep = prepare(embeddings, labels, metric=metric, is_query=is_query, is_gallery=is_gallery)
    P, M = prep.class_pair_counts()
    ev = counts.evaluated(P, M)
    if ev.sum() < 2:
        raise InputError(f"only {int(ev.sum())} class(es) can be evaluated; need at least 2")
    if calibration is not None:
        prep, _ = _calibrated(prep, calibration, embeddings, labels, groups, ExactEngine.name, None)
    # Only the grid's upper end is read; the lower end just has to lie below it
    # (and, for squared l2 keys, stay positive so that they keep their order).
    lo = t / 2 if prep.squared_keys else t - 1.0
    out = ExactEngine(block_bytes=block_bytes).run(
        prep, GridSpec(num_thresholds=2, calibration_range=(lo, t)), progress)
    tp, fp = out.class_tp[ev, -1], out.class_fp[ev, -1]
    U = utility_curves(tp[:, None], fp[:, None], P[ev], M[ev], kind=utility, beta=beta)[:, 0]
    return point_at(t, tp, fp, P[ev], M[ev], U)


def _block(labels, tp_all, fp_all, P, M, thresholds, kind, beta, epsilon, policy,
           n_rows, queries, recall1, alpha=opt.FAIRNESS_ALPHA,
           min_rows: int = opt.MIN_CLASS_ROWS) -> ConsistencyBlock:
    """One consistency block (classes or groups) from its counts."""
    ev = counts.evaluated(P, M, n_rows, min_rows)
    idx = np.nonzero(ev)[0]
    lab = [labels[i] for i in idx]
    tp, fp = tp_all[idx], fp_all[idx]
    Pe, Me = P[idx], M[idx]
    U = utility_curves(tp, fp, Pe, Me, kind=kind, beta=beta)
    cons = consistency(U, thresholds, lab, epsilon)
    rt = recommend(policy, thresholds, cons.mean_curve, cons.worst_curve, tp, fp, Pe, Me)
    fair_at, fair_curve = fairness_of(tp, fp, Pe, Me, thresholds, rt.index, alpha)
    rt = replace(rt, fairness=fair_at)
    per_far, per_frr = class_rates(tp, fp, Pe, Me, rt.index)
    best = thresholds[np.argmax(U, axis=1)]
    per = []
    for j in cons.order:  # ascending mean utility: the worst first
        i = idx[j]
        r1 = recall1[i]
        per.append(ClassSummary(
            label=lab[j], n=int(n_rows[i]), queries=int(queries[i]), positives=int(Pe[j]),
            negatives=int(Me[j]), mean_utility=float(cons.mean_utility[j]),
            far_at_threshold=float(per_far[j]), frr_at_threshold=float(per_frr[j]),
            best_threshold=float(best[j]), opis_contribution=float(cons.contribution[j]),
            worst=bool(cons.worst[j]), recall_at_1=None if np.isnan(r1) else float(r1),
            low_evidence=opt.low_evidence(int(queries[i]), int(Pe[j]))))
    excluded = tuple(labels[i] for i in np.nonzero(~ev)[0])
    return ConsistencyBlock(
        opis=cons.opis, epsilon_opis=cons.epsilon_opis,
        mean_utility=tuple(float(v) for v in cons.mean_curve),
        worst_mean_utility=tuple(float(v) for v in cons.worst_curve),
        recommended_threshold=rt, evaluated=len(idx), excluded=len(excluded),
        excluded_labels=excluded, per_class=tuple(per),
        curves=Curves(labels=tuple(lab), utility=U, tp=tp, fp=fp, positives=Pe, negatives=Me),
        fairness=fair_curve)


def _per_id_recall1(ids: np.ndarray, n: int, out: EngineOutput) -> np.ndarray:
    has = out.n_relevant > 0
    hits = np.bincount(ids[has], weights=(out.first_rank[has] == 1), minlength=n)
    cnt = np.bincount(ids[has], minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cnt > 0, hits / np.maximum(cnt, 1), np.nan)


def build_result(prep: Prepared, out: EngineOutput, *, spec: GridSpec, metric: str, utility: str,
                 beta: float, epsilon: float, policy: Policy, engine_name: str,
                 sources: Sequence[dict] = (), group_column: str | None = None,
                 timestamp: bool = True,
                 fairness_alpha: float = opt.FAIRNESS_ALPHA,
                 calibration_info: dict | None = None) -> EvaluationResult:
    """Turn engine counts into the result (shared by every engine)."""
    th = out.thresholds
    C = prep.n_classes
    P, M = prep.class_pair_counts()
    min_rows = spec.min_class_rows
    ev = counts.evaluated(P, M, prep.class_rows, min_rows)
    if min_rows > 2:
        # SPEC 3: an excluded class is in no average, the retrieval means
        # included (at the default every query with a positive is of an
        # evaluated class, so nothing changes there)
        out = replace(out, n_relevant=np.where(ev[prep.q_class], out.n_relevant, 0))
    if not spec.retrieval:  # not asked for (an engine may have ranked on the way: unused)
        out = replace(out, n_relevant=np.zeros_like(out.n_relevant))
    q_per_class = np.bincount(prep.q_class, minlength=C)
    classes = _block(prep.class_labels, out.class_tp, out.class_fp, P, M, th, utility, beta,
                     epsilon, policy, prep.class_rows, q_per_class,
                     _per_id_recall1(prep.q_class, C, out), fairness_alpha, min_rows)
    if classes.evaluated < 2:
        raise InputError(f"only {classes.evaluated} class(es) can be evaluated; need at least 2")
    groups = _group_block(prep, out, th, utility, beta, epsilon, policy, fairness_alpha,
                          min_rows)
    gfar = global_far(out.class_fp[ev], M[ev])
    cal = CalibrationRange(
        lower=float(th[0]), upper=float(th[-1]), source=out.range_source,
        far_lower=float(gfar[0]), far_upper=float(gfar[-1]),
        far_requested=tuple(spec.far_range) if out.range_source == "far" else None)
    retrieval = (retrieval_metrics(out.first_rank, out.ap_at_r, out.n_relevant, out.hits_at_r)
                 if spec.retrieval else None)
    hist = DistanceHistogram(tuple(float(v) for v in out.hist_edges),
                             tuple(int(v) for v in out.hist_pos), tuple(int(v) for v in out.hist_neg),
                             out.notes.get("report_histogram_rows"))
    options = _options(spec, metric, utility, beta, epsilon, policy, group_column,
                       calibration_info)
    ver = None
    if spec.verification is not None and out.verification is not None:
        gpts = () if out.group_verification is None or groups is None else tuple(
            zip(prep.group_labels, out.group_verification))
        ver = verification_of(out.verification, spec.verification, gpts)
    prov = _provenance(out, spec, engine_name, sources, options, calibration_info, timestamp)
    estimate = None
    if out.replicates is not None:  # a sampling engine: intervals, bias-corrected OPIS (SPEC 15)
        from .metrics.estimate import attach

        classes, estimate = attach(classes, out, prep.class_labels, P, M, kind=utility,
                                   beta=beta, epsilon=epsilon, policy=policy,
                                   rows=prep.class_rows, min_rows=min_rows)
    return EvaluationResult(
        n_samples=prep.n_samples, dim=prep.dim, metric=metric, utility=utility, beta=float(beta),
        epsilon=float(epsilon), calibration_range=cal, thresholds=tuple(float(v) for v in th),
        classes=classes, retrieval=retrieval,
        distance_histogram=hist, options=options, provenance=prov, groups=groups,
        group_column=group_column, verification=ver,
        verification_asked=spec.verification is not None, estimate=estimate)


def _group_block(prep: Prepared, out: EngineOutput, th, utility: str, beta: float,
                 epsilon: float, policy: Policy, fairness_alpha: float, min_rows: int):
    """The per-group block (with each group's EER under --verification), or
    None without groups or when no group can be evaluated."""
    if prep.q_group is None:
        return None
    G = len(prep.group_labels)
    Pg, Mg = prep.group_pair_counts()
    if not counts.evaluated(Pg, Mg, prep.group_rows, min_rows).any():
        return None
    qg = np.bincount(prep.q_group, minlength=G)
    groups = _block(prep.group_labels, out.group_tp, out.group_fp, Pg, Mg, th, utility, beta,
                    epsilon, policy, prep.group_rows, qg, _per_id_recall1(prep.q_group, G, out),
                    fairness_alpha, min_rows)
    if out.group_verification is not None:
        eer_by = {prep.group_labels[g]: eer_of(p)[0]
                  for g, p in enumerate(out.group_verification) if p is not None}
        groups = replace(groups, per_class=tuple(
            replace(c, eer=eer_by.get(c.label)) for c in groups.per_class))
    return groups


def _options(spec: GridSpec, metric: str, utility: str, beta: float, epsilon: float,
             policy: Policy, group_column: str | None, calibration_info: dict | None) -> dict:
    """The result's ``options`` (key order is part of the JSON's bytes): the
    evaluation options, then ``min_class_rows`` and ``retrieval`` only where
    they differ from the default, the verification view's, and the
    calibration applied (its path, else its method)."""
    options = {
        "metric": metric, "utility": utility, "beta": beta, "epsilon": epsilon,
        "num_thresholds": spec.num_thresholds,
        "far_range": list(spec.far_range) if spec.calibration_range is None else None,
        "calibration_range": list(spec.calibration_range) if spec.calibration_range else None,
        "threshold_policy": str(policy), "group_column": group_column,
    }
    # only when set, so that default documents keep their bytes
    if spec.min_class_rows != opt.MIN_CLASS_ROWS:
        options["min_class_rows"] = int(spec.min_class_rows)
    if not spec.retrieval:
        options["retrieval"] = False
    if spec.verification is not None:
        options["verification"] = True
        options["dcf"] = list(spec.verification)
    if calibration_info is not None:
        options["calibration"] = calibration_info.get("path", calibration_info["method"])
    return options


def _provenance(out: EngineOutput, spec: GridSpec, engine_name: str, sources: Sequence[dict],
                options: dict, calibration_info: dict | None, timestamp: bool) -> dict:
    """The result's ``provenance``: tool, inputs, engine, passes, ``options``,
    versions, the engine's notes (and why --verification was not measured),
    the calibration, the time."""
    prov = {
        "tool": "opis", "tool_version": __version__, "inputs": [dict(s) for s in sources],
        "engine": engine_name, "index": provenance_index(engine_name),
        "passes": out.passes, "options": options, "versions": _versions(),
    }
    if out.notes:
        prov["engine_notes"] = out.notes
        if "index" in out.notes:
            prov["index"] = out.notes["index"]
    if spec.verification is not None and out.verification is None:
        why = ("does not measure it" if capabilities(engine_name).exact else
               "does not see every pair (SPEC 14 needs all of them)")
        prov["engine_notes"] = {**prov.get("engine_notes", {}), "verification": (
            f"not measured: the {engine_name} engine {why}; "
            f"use --engine {either(with_capability('verification'))}")}
    if calibration_info is not None:
        prov["calibration"] = calibration_info
    if timestamp:
        prov["time"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return prov
