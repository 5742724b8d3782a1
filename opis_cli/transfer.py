"""``calibrate()``: does a threshold chosen today hold on classes never seen? (SPEC 12)

A threshold is chosen on a calibration side ``A`` (at a target global FAR,
or by a SPEC 6 policy on ``A``'s own grid) and applied to a test side ``B``
whose classes (or groups) ``A`` never saw. The sides are either ``K``
class-disjoint folds of one dataset (fold ``k`` is ``B``, the others ``A``)
or two datasets. Reported per fold: ``A``'s threshold and its FAR and TPR
there; on ``B`` at that threshold the global FAR and TPR, the per-class FAR
and FRR spread, the share of classes above twice the target, and the
threshold ``B`` alone would have needed (the *oracle*) with its TPR.

Far targets cost two passes over all pairs whatever ``K``
(``engines/transfer.py``); policy targets also evaluate every side in full
(``2K`` evaluations). No file I/O and no terminal output here.
"""

from __future__ import annotations

import datetime as _dt
import json
import zlib
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np

from . import counts
from . import options as opt
from ._version import __version__
from .engines.base import Progress
from .errors import ConfigError, InputError
from .metrics.threshold import spread_of
from .prepare import prepare
from .results import Spread, _clean

#: the ``transfer.split.kind`` values
SPLIT_FOLDS = "folds"
SPLIT_FILES = "files"


# ----------------------------------------------------------------- the split
def fold_of(names: Sequence[str], folds: int, seed: int) -> dict[str, int]:
    """The fold of every class (or group) name (SPEC 12).

    Names sorted by ``(crc32(utf8(f"{seed}:{name}")), name)``; the ``i``-th
    goes to fold ``i mod folds``. Reproducible anywhere, e.g. in Python::

        sorted(names, key=lambda n: (zlib.crc32(f"{seed}:{n}".encode()), n))
    """
    order = sorted({str(n) for n in names},
                   key=lambda n: (zlib.crc32(f"{seed}:{n}".encode("utf-8")), n))
    return {n: i % folds for i, n in enumerate(order)}


def row_folds(labels: Sequence, folds: int, seed: int) -> np.ndarray:
    """The fold of every row for ``--split rows`` (the closed set: every class on both sides).

    Each class's rows (by original index ``j``) are sorted by
    ``(crc32(utf8(f"{seed}:{label}:{j}")), j)``; the ``m``-th goes to fold
    ``(m + o) mod folds`` with ``o = crc32(utf8(f"{seed}:{label}")) mod folds``,
    so that small classes do not all start in fold 0.
    """
    lab = [str(v) for v in labels]
    by: dict[str, list[int]] = {}
    for j, v in enumerate(lab):
        by.setdefault(v, []).append(j)
    out = np.empty(len(lab), np.int64)
    for v, rows in by.items():
        o = zlib.crc32(f"{seed}:{v}".encode("utf-8")) % folds
        order = sorted(rows, key=lambda j: (zlib.crc32(f"{seed}:{v}:{j}".encode("utf-8")), j))
        for m, j in enumerate(order):
            out[j] = (m + o) % folds
    return out


#: ``--split``: what the folds hold apart
SPLITS = ("classes", "groups", "rows")


@dataclass(frozen=True)
class Target:
    """How ``A`` picks its threshold: ``far:F`` (the exact order statistic
    ``t_A(F)``, SPEC 5) or a SPEC 6 policy on ``A``'s own grid."""

    name: str                 # "far", "max-mean-utility" or "max-worst-utility"
    far: float | None = None

    @classmethod
    def parse(cls, text: str) -> "Target":
        t = str(text).strip()
        if t in opt.POLICIES:
            return cls(t)
        if t.startswith("far:"):
            try:
                f = float(t[4:])
            except ValueError:
                f = float("nan")
            if not (0.0 < f <= 1.0):
                raise ConfigError(f"--target {text}: F must be a number in (0, 1], e.g. far:0.01")
            return cls("far", f)
        raise ConfigError(f"--target {text!r}: expected far:F (e.g. far:0.01), "
                          f"{' or '.join(opt.POLICIES)}")

    def __str__(self) -> str:
        return f"far:{self.far:g}" if self.name == "far" else self.name


# ----------------------------------------------------------------- result types
@dataclass(frozen=True)
class CalibrationSide:
    """The calibration side ``A`` of one fold at its threshold."""

    classes: int          # labels among its rows
    evaluated: int        # of them evaluated (SPEC 3, on this side's pairs)
    rows: int
    threshold: float
    far: float
    tpr: float

    def to_dict(self) -> dict:
        return _clean({"classes": self.classes, "evaluated_classes": self.evaluated,
                       "rows": self.rows, "threshold": self.threshold, "far": self.far,
                       "tpr": self.tpr})


@dataclass(frozen=True)
class ClassRate:
    """One evaluated class of a test side at the calibration threshold."""

    label: str
    far: float
    frr: float
    positives: int
    negatives: int


@dataclass(frozen=True)
class GroupRates:
    """With a group split: the unseen groups (customers) at the calibration
    threshold, each over the pairs of its evaluated query rows."""

    far_spread: Spread
    frr_spread: Spread
    fraction_far_above_2x: float
    per_group: tuple[ClassRate, ...]

    def to_dict(self) -> dict:
        return _clean({
            "evaluated": len(self.per_group), "far_spread": self.far_spread.to_dict(),
            "frr_spread": self.frr_spread.to_dict(),
            "fraction_far_above_2x": self.fraction_far_above_2x,
            "per_group": [{"label": c.label, "far": c.far, "frr": c.frr,
                           "positives": c.positives, "negatives": c.negatives}
                          for c in self.per_group]})


@dataclass(frozen=True)
class TestSide:
    """The test side ``B`` of one fold at ``A``'s threshold, and its oracle."""

    classes: int
    evaluated: int
    rows: int
    far: float
    tpr: float
    far_spread: Spread
    frr_spread: Spread
    fraction_far_above_2x: float
    oracle_threshold: float
    oracle_tpr: float
    oracle_far: float
    per_class: tuple[ClassRate, ...] = ()
    groups: GroupRates | None = None

    def to_dict(self) -> dict:
        d = self._dict()
        if self.groups is not None:
            d["groups"] = self.groups.to_dict()
        return d

    def _dict(self) -> dict:
        return _clean({
            "classes": self.classes, "evaluated_classes": self.evaluated, "rows": self.rows,
            "far": self.far, "tpr": self.tpr, "far_spread": self.far_spread.to_dict(),
            "frr_spread": self.frr_spread.to_dict(),
            "fraction_far_above_2x": self.fraction_far_above_2x,
            "oracle_threshold": self.oracle_threshold, "oracle_tpr": self.oracle_tpr,
            "oracle_far": self.oracle_far,
            "per_class": [{"label": c.label, "far": c.far, "frr": c.frr,
                           "positives": c.positives, "negatives": c.negatives}
                          for c in self.per_class]})


@dataclass(frozen=True)
class MethodOnUnseen:
    """One calibration method (SPEC 11) fitted on the calibration side and
    applied to the test side: the test side's numbers on adjusted distances,
    at the fitted global threshold and on its own FAR range (OPIS)."""

    method: str
    global_threshold: float
    uncalibrated_rows: int
    opis: float
    epsilon_opis: float
    far: float
    tpr: float
    far_spread: Spread
    frr_spread: Spread
    fraction_far_above_2x: float

    def to_dict(self) -> dict:
        return _clean({
            "method": self.method, "global_threshold": self.global_threshold,
            "uncalibrated_rows": self.uncalibrated_rows, "opis": self.opis,
            "epsilon_opis": self.epsilon_opis, "far": self.far, "tpr": self.tpr,
            "far_spread": self.far_spread.to_dict(), "frr_spread": self.frr_spread.to_dict(),
            "fraction_far_above_2x": self.fraction_far_above_2x})


@dataclass(frozen=True)
class FoldTransfer:
    fold: int
    calibration: CalibrationSide
    test: TestSide
    methods: tuple[MethodOnUnseen, ...] = ()

    def to_dict(self) -> dict:
        d = {"fold": self.fold, "calibration": self.calibration.to_dict(),
             "test": self.test.to_dict()}
        if self.methods:
            d["methods"] = [m.to_dict() for m in self.methods]
        return d


@dataclass(frozen=True)
class TransferResult:
    """Everything ``opis calibrate`` reports (JSON: :meth:`to_dict`).

    ``target_far`` is the FAR that ``fraction_far_above_2x`` doubles: the
    target of a ``far:F`` target; for a policy target, each fold's
    calibration FAR (what the chosen threshold was seen to give on ``A``).
    """

    target: Target
    split: dict
    folds: tuple[FoldTransfer, ...]
    n_samples: int
    dim: int
    metric: str
    options: dict
    provenance: dict = field(default_factory=dict)
    schema_version: int = 1

    def summary(self) -> dict:
        def stats(vals):
            v = np.asarray(vals, np.float64)
            return {"mean": float(v.mean()), "min": float(v.min()), "max": float(v.max())}

        t = [f.test for f in self.folds]
        out = {"far": stats([x.far for x in t]), "tpr": stats([x.tpr for x in t]),
               "oracle_tpr": stats([x.oracle_tpr for x in t]),
               "tpr_lost": stats([x.oracle_tpr - x.tpr for x in t]),
               "fraction_far_above_2x": stats([x.fraction_far_above_2x for x in t])}
        if self.folds and self.folds[0].methods:
            out["methods"] = {
                m.method: {k: stats([getattr(f.methods[i], k) for f in self.folds])
                           for k in ("opis", "epsilon_opis", "far", "tpr",
                                     "fraction_far_above_2x")}
                for i, m in enumerate(self.folds[0].methods)}
        return out

    @property
    def verdict(self):
        """Does the threshold transfer to unseen classes? (:func:`opis_cli.verdict.transfer_verdict`)"""
        from .verdict import transfer_verdict

        return transfer_verdict(self)

    def to_dict(self) -> dict:
        return _clean({
            "schema_version": self.schema_version, "kind": "calibrate",
            "verdict": self.verdict.to_dict(),
            "n_samples": self.n_samples, "dim": self.dim, "metric": self.metric,
            "transfer": {
                "target": str(self.target),
                "target_far": self.target.far,
                "split": self.split,
                "folds": [f.to_dict() for f in self.folds],
                "summary": self.summary(),
            },
            "options": self.options, "provenance": self.provenance})

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False) + "\n"


# ----------------------------------------------------------------- the API
@dataclass(frozen=True)
class Data:
    """One dataset for :func:`calibrate`: embeddings, labels and optional
    per-row groups and query/gallery flags (as :func:`opis_cli.evaluate`)."""

    embeddings: Any
    labels: Sequence
    groups: Sequence | None = None
    is_query: Sequence[bool] | None = None
    is_gallery: Sequence[bool] | None = None


def calibrate(
    data: Data,
    *,
    test: Data | None = None,
    folds: int = opt.FOLDS,
    seed: int = opt.SEED,
    target: str = opt.TARGET,
    split: str = "classes",
    methods: Sequence[str] = (),
    metric: str = opt.METRIC,
    far_range: tuple[float, float] | str = opt.FAR_RANGE,
    calibration_range: tuple[float, float] | str | None = None,
    num_thresholds: int = opt.NUM_THRESHOLDS,
    utility: str = opt.UTILITY,
    beta: float = opt.BETA,
    epsilon: float = opt.EPSILON,
    block_bytes: int = opt.BLOCK_BYTES,
    progress: Progress | None = None,
    sources: Sequence[dict] = (),
    group_column: str | None = None,
    timestamp: bool = True,
) -> TransferResult:
    """Transfer of a threshold to unseen classes (SPEC 12).

    Parameters
    ----------
    data : the dataset to fold, or the calibration side when ``test`` is given
    test : the test side (explicit split); then ``folds``/``seed`` are unused
    folds, seed : ``K`` class-disjoint folds, assigned as :func:`fold_of`
    target : ``far:F`` or a SPEC 6 policy (``max-mean-utility``,
        ``max-worst-utility``) applied on the calibration side's own grid
    split : what the folds hold apart: ``"classes"`` (unseen classes),
        ``"groups"`` (the groups of ``data.groups``: unseen customers) or
        ``"rows"`` (:func:`row_folds`: every class on both sides, the closed
        set); with ``test``, ``"groups"`` only says that the groups are reported
    methods : calibrations to compare (SPEC 11: ``global``, ``per-class``,
        ``per-group``, ``cluster:K``), each fitted on every calibration side at
        the target FAR and applied to its test side; ``per-class`` and
        ``per-group`` need the same classes on both sides (``split="rows"``)
    metric : ``"cosine"`` or ``"l2"``
    far_range, calibration_range, num_thresholds, utility, beta, epsilon :
        the grid and utility of a policy target (as :func:`opis_cli.evaluate`);
        unused by ``far:F``

    Returns
    -------
    TransferResult

    Raises
    ------
    InputError, ConfigError
        One-line messages (a fold whose side has fewer than two evaluated
        classes names the fold and suggests fewer folds).
    """
    opt.validate(metric=metric, utility=utility, beta=beta, epsilon=epsilon,
                 num_thresholds=num_thresholds)
    tg = Target.parse(target)
    if test is None:
        if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)):
            raise ConfigError(f"--folds must be an integer, got {folds!r}")
        opt.check("folds", int(folds))
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ConfigError(f"--seed must be an integer, got {seed!r}")
    policy_opts = dict(metric=metric, far_range=far_range, calibration_range=calibration_range,
                       num_thresholds=num_thresholds, utility=utility, beta=beta,
                       epsilon=epsilon, block_bytes=block_bytes)
    if split not in SPLITS:
        raise ConfigError(f"--split {split!r}: expected one of {', '.join(SPLITS)}")
    if split == "groups" and data.groups is None:
        raise ConfigError("--split groups needs a group column (--group-column)")
    from .calibration import parse_method

    kinds = [parse_method(m)[0] for m in methods]
    if kinds and tg.name != "far":
        raise ConfigError(f"--method needs --target far:F (calibrations are fitted at a FAR), "
                          f"not {tg}")
    closed = [m for m, k in zip(methods, kinds) if k in ("per-class", "per-group")]
    if closed and test is None and split != "rows":
        raise ConfigError(f"--method {closed[0]} needs the same classes on both sides: use "
                          f"--split rows (the closed set), or cluster:K for unseen {split}")
    if "per-group" in kinds and data.groups is None:
        raise ConfigError("--method per-group needs a group column (--group-column)")
    options = {"target": str(tg), "metric": metric, "group_column": group_column,
               "split": split}
    if methods:
        options.update(methods=list(methods), utility=utility, beta=beta, epsilon=epsilon)
    fix = dict(methods=list(methods), seed=int(seed), policy_opts=policy_opts) if methods \
        else None
    if tg.name != "far":
        far = opt.parse_range(far_range, "--far-range")
        cal = opt.parse_range(calibration_range, "--calibration-range")
        options.update(utility=utility, beta=beta, epsilon=epsilon,
                       num_thresholds=int(num_thresholds),
                       far_range=list(far) if cal is None else None,
                       calibration_range=list(cal) if cal else None)
    if test is None:
        options.update(folds=int(folds), seed=int(seed))
        fold_list, split_d, n, dim = _by_folds(data, int(folds), int(seed), tg, split,
                                               policy_opts, block_bytes, progress, fix)
    else:
        fold_list, split_d, n, dim = _by_files(data, test, tg, split, policy_opts,
                                               block_bytes, progress, fix)
    prov = {"tool": "opis", "tool_version": __version__, "command": "calibrate",
            "inputs": [dict(s) for s in sources], "engine": "exact (transfer passes)",
            "options": options}
    from .api import _versions

    prov["versions"] = _versions()
    if timestamp:
        prov["time"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return TransferResult(target=tg, split=split_d, folds=tuple(fold_list), n_samples=n, dim=dim,
                          metric=metric, options=options, provenance=prov)


#: separates a row's fold from its label in the fold-major arrangement (see _by_folds)
_FOLD_SEP = "\x1f"


def _label(name: str) -> str:
    """A class label without the fold prefix of the fold-major arrangement."""
    return name[7:]


def _prepare(data: Data, metric: str):
    return prepare(data.embeddings, data.labels, metric=metric, groups=data.groups,
                   is_query=data.is_query, is_gallery=data.is_gallery)


def _rank(tg: Target, P: np.ndarray, M: np.ndarray) -> int:
    ev = counts.evaluated(P, M)
    return counts.ceil_rank(tg.far, int(M[ev].sum()))


def _check_side(P, M, what: str, hint: str) -> None:
    n = int(counts.evaluated(P, M).sum())
    if n < 2:
        raise InputError(f"{what} has {n} evaluated class(es) (a class needs two rows and "
                         f"another class beside it); need at least 2{hint}")


def _policy_threshold(data: Data, rows: np.ndarray | None, policy: str, opts: dict) -> float:
    """The SPEC 6 policy threshold of ``data`` (or its ``rows``) on its own grid."""
    from .api import evaluate

    def pick(v):
        if v is None:
            return None
        a = np.asarray(v)
        return a[rows] if rows is not None else a

    emb = data.embeddings if rows is None else np.asarray(data.embeddings[rows])
    res = evaluate(emb, pick(data.labels), is_query=pick(data.is_query),
                   is_gallery=pick(data.is_gallery), threshold_policy=policy, timestamp=False,
                   **opts)
    return float(res.recommended_threshold.value)


def _subset(data: Data, rows: np.ndarray) -> Data:
    def pick(v):
        return None if v is None else np.asarray(v)[rows]

    return Data(np.asarray(data.embeddings[rows]), pick(data.labels), pick(data.groups),
                pick(data.is_query), pick(data.is_gallery))


def _methods(A: Data, B: Data, fix: dict, target_far: float, block_bytes: int,
             progress) -> tuple[MethodOnUnseen, ...]:
    """Fit every method on A (one pair of passes) and measure each on B."""
    from .api import evaluate
    from .calibration import fit_many

    o = fix["policy_opts"]
    cals = fit_many(A.embeddings, A.labels, fix["methods"], target_far=target_far,
                    metric=o["metric"], groups=A.groups, is_query=A.is_query,
                    is_gallery=A.is_gallery, seed=fix["seed"], block_bytes=block_bytes,
                    progress=progress)
    out = []
    common = dict(groups=B.groups, is_query=B.is_query, is_gallery=B.is_gallery,
                  metric=o["metric"], block_bytes=block_bytes, timestamp=False)
    for cal in cals:
        own = evaluate(B.embeddings, B.labels, calibration=cal, utility=o["utility"],
                       beta=o["beta"], epsilon=o["epsilon"], **common)
        t = cal.global_threshold
        at = evaluate(B.embeddings, B.labels, calibration=cal, num_thresholds=2,
                      calibration_range=(t - 1.0, t), **common)
        cv = at.classes.curves
        far_c = cv.fp[:, -1] / cv.negatives
        frr_c = 1.0 - cv.tp[:, -1] / cv.positives
        off = cal.offsets(B.embeddings, B.labels, B.groups)
        out.append(MethodOnUnseen(
            method=cal.method, global_threshold=t, uncalibrated_rows=off.uncalibrated,
            opis=own.opis, epsilon_opis=own.epsilon_opis,
            far=float(cv.fp[:, -1].sum() / cv.negatives.sum()),
            tpr=float(cv.tp[:, -1].sum() / cv.positives.sum()),
            far_spread=spread_of(far_c), frr_spread=spread_of(frr_c),
            fraction_far_above_2x=float(np.mean(far_c > 2 * target_far))))
    return tuple(out)


def _by_folds(data, K, seed, tg, split, popts, block_bytes, progress, fix=None):
    from .engines.transfer import (Side, Target as T, run_transfer, side_pair_counts,
                                   side_row_pairs)

    if split == "rows":
        row_fold = row_folds(data.labels, K, seed)
    else:
        names = [str(v) for v in (data.groups if split == "groups" else data.labels)]
        fmap = fold_of(names, K, seed)
        if len(fmap) < K:
            raise ConfigError(f"--folds {K}: only {len(fmap)} {split} to split; use at most "
                              f"{len(fmap)} folds")
        row_fold = np.fromiter((fmap[v] for v in names), np.int64, count=len(names))
    if split == "classes":
        # every class lies in one fold: arrange the rows fold by fold (classes sorted
        # within each), so that the engine's gallery rows of one fold are contiguous
        # and each query row's pairs go to one cell histogram at a time (cache)
        keyed = [f"{f:06d}{_FOLD_SEP}{v}" for f, v in zip(row_fold, map(str, data.labels))]
        prep = _prepare(replace(data, labels=keyed), popts["metric"])
    else:
        prep = _prepare(data, popts["metric"])
    fq, fg = row_fold[prep.q_rows], row_fold[prep.g_rows]
    sides, targets = [], []
    hint = f"; use fewer --folds than {K}"
    for k in range(K):
        others = tuple(f for f in range(K) if f != k)
        Pa, Ma = side_pair_counts(prep, fq, fg, others)
        Pb, Mb = side_pair_counts(prep, fq, fg, (k,))
        _check_side(Pa, Ma, f"fold {k}'s calibration side", hint)
        _check_side(Pb, Mb, f"fold {k}'s test side ({(row_fold == k).sum()} rows)", hint)
        sides += [Side(others), Side((k,), own=True)]
        if tg.name == "far":
            a = 2 * k
            targets += [[T(rank=_rank(tg, Pa, Ma))],
                        [T(same=(a, 0)), T(rank=_rank(tg, Pb, Mb))]]
        else:
            ta = _policy_threshold(data, np.nonzero(row_fold != k)[0], tg.name, popts)
            tb = _policy_threshold(data, np.nonzero(row_fold == k)[0], tg.name, popts)
            targets += [[T(value=ta)], [T(value=ta), T(value=tb)]]
    res = run_transfer(prep, fq, fg, K, sides, targets, block_bytes, progress)
    out = []
    for k in range(K):
        a, b = res[2 * k], res[2 * k + 1]
        out.append(_fold(k, prep, a, b, rows_a=int((row_fold != k).sum()),
                         rows_b=int((row_fold == k).sum()),
                         cls_a=_n_labels(data, row_fold != k), cls_b=_n_labels(data, row_fold == k),
                         tg=tg, rows_pn=side_row_pairs(prep, fq, fg, (k,)),
                         label_of=_label if split == "classes" else str))
    if fix:
        out = [replace(f, methods=_methods(_subset(data, np.nonzero(row_fold != f.fold)[0]),
                                           _subset(data, np.nonzero(row_fold == f.fold)[0]),
                                           fix, tg.far, block_bytes, progress))
               for f in out]
    by = {"classes": "class", "groups": "group", "rows": "row"}[split]
    return out, {"kind": SPLIT_FOLDS, "folds": K, "seed": seed, "by": by}, prep.n_samples, \
        prep.dim


def _by_files(data, test, tg, split, popts, block_bytes, progress, fix=None):
    from .engines.transfer import Side, Target as T, run_transfer, side_pair_counts, side_row_pairs

    pa = _prepare(data, popts["metric"])
    pb = _prepare(test, popts["metric"])
    if pa.dim != pb.dim:
        raise InputError(f"the calibration data have {pa.dim} dimensions and the test data "
                         f"{pb.dim}; both sides must come from the same model")
    zq = lambda p: np.zeros(len(p.q_rows), np.int64)  # noqa: E731
    zg = lambda p: np.zeros(len(p.g_rows), np.int64)  # noqa: E731
    Pa, Ma = side_pair_counts(pa, zq(pa), zg(pa), (0,))
    Pb, Mb = side_pair_counts(pb, zq(pb), zg(pb), (0,))
    _check_side(Pa, Ma, "the calibration data", "")
    _check_side(Pb, Mb, "the test data (--test)", "")
    if tg.name == "far":
        ta = run_transfer(pa, zq(pa), zg(pa), 1, [Side((0,))], [[T(rank=_rank(tg, Pa, Ma))]],
                          block_bytes, progress)[0]
        t_star = ta.thresholds[0]
        oracle = T(rank=_rank(tg, Pb, Mb))
    else:
        t_star = _policy_threshold(data, None, tg.name, popts)
        ta = run_transfer(pa, zq(pa), zg(pa), 1, [Side((0,))], [[T(value=t_star)]],
                          block_bytes, progress)[0]
        oracle = T(value=_policy_threshold(test, None, tg.name, popts))
    tb = run_transfer(pb, zq(pb), zg(pb), 1, [Side((0,), own=True)],
                      [[T(value=t_star), oracle]], block_bytes, progress)[0]
    fold = _fold(0, pb, ta, tb, rows_a=pa.n_samples, rows_b=pb.n_samples,
                 cls_a=len(set(map(str, data.labels))), cls_b=len(set(map(str, test.labels))),
                 tg=tg, rows_pn=side_row_pairs(pb, zq(pb), zg(pb), (0,)))
    if fix:
        fold = replace(fold, methods=_methods(data, test, fix, tg.far, block_bytes, progress))
    return [fold], {"kind": SPLIT_FILES, "by": "group" if split == "groups" else "class"}, \
        pa.n_samples + pb.n_samples, pa.dim


def _n_labels(data: Data, mask: np.ndarray) -> int:
    lab = np.asarray([str(v) for v in data.labels], dtype=object)
    return len(set(lab[mask]))


def _rates(ids, n_ids, names, tp, fp, pos, neg) -> tuple[ClassRate, ...]:
    """Per id (class or group) rates from per-row counts, over ids with P > 0 and M > 0."""
    P = np.bincount(ids, weights=pos, minlength=n_ids)
    M = np.bincount(ids, weights=neg, minlength=n_ids)
    TP = np.bincount(ids, weights=tp, minlength=n_ids)
    FP = np.bincount(ids, weights=fp, minlength=n_ids)
    return tuple(ClassRate(names[i], float(FP[i] / M[i]), float(1.0 - TP[i] / P[i]), int(P[i]),
                           int(M[i])) for i in np.nonzero((P > 0) & (M > 0))[0])


def _group_rates(prep_b, b, rows_pn, ref: float) -> GroupRates | None:
    """The unseen groups at the calibration threshold (group splits only)."""
    if prep_b.q_group is None or rows_pn is None:
        return None
    pos, neg = rows_pn
    ev_row = b.evaluated[prep_b.q_class]
    per = _rates(prep_b.q_group, len(prep_b.group_labels), prep_b.group_labels,
                 b.row_tp[0], b.row_fp[0], pos * ev_row, neg * ev_row)
    far = np.array([g.far for g in per])
    return GroupRates(far_spread=spread_of(far), frr_spread=spread_of(np.array([g.frr for g in per])),
                      fraction_far_above_2x=float(np.mean(far > 2 * ref)) if len(far) else
                      float("nan"), per_group=per)


def _fold(k, prep_b, a, b, *, rows_a, rows_b, cls_a, cls_b, tg: Target,
          rows_pn=None, label_of=str) -> FoldTransfer:
    """One fold's numbers from the counts of its two sides (SPEC 12); ``rows_pn``:
    the per-row positive and negative pairs of the test side (for its groups)."""
    eva, evb = a.evaluated, b.evaluated
    Pa, Ma = a.positives[eva].sum(), a.negatives[eva].sum()
    Pb, Mb = b.positives[evb].sum(), b.negatives[evb].sum()
    cal = CalibrationSide(classes=cls_a, evaluated=int(eva.sum()), rows=rows_a,
                          threshold=a.thresholds[0], far=a.fp[0] / Ma, tpr=a.tp[0] / Pa)
    ctp, cfp = b.class_tp[0][evb], b.class_fp[0][evb]
    P_c, M_c = b.positives[evb], b.negatives[evb]
    far_c = cfp / M_c
    frr_c = 1.0 - ctp / P_c
    ref = tg.far if tg.name == "far" else cal.far
    labels = [label_of(prep_b.class_labels[i]) for i in np.nonzero(evb)[0]]
    per = tuple(ClassRate(lab, float(f), float(r), int(p), int(m))
                for lab, f, r, p, m in zip(labels, far_c, frr_c, P_c, M_c))
    test = TestSide(
        classes=cls_b, evaluated=int(evb.sum()), rows=rows_b, far=b.fp[0] / Mb, tpr=b.tp[0] / Pb,
        far_spread=spread_of(far_c), frr_spread=spread_of(frr_c),
        fraction_far_above_2x=float(np.mean(far_c > 2 * ref)),
        oracle_threshold=b.thresholds[1], oracle_tpr=b.tp[1] / Pb, oracle_far=b.fp[1] / Mb,
        per_class=per, groups=_group_rates(prep_b, b, rows_pn, ref))
    return FoldTransfer(k, cal, test)
