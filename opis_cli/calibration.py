"""Calibrations (SPEC 11): per-row distance offsets fitted once, applied everywhere.

A calibration gives every row ``r`` two offsets, ``a_r`` when it is the query
and ``b_r`` when it is in the gallery; a pair's adjusted distance is
``d' = d - a_q - b_g``, and a pair is accepted when ``d' <= global_threshold``.
Methods, all fitted at a target global FAR ``F`` on calibration data
(``theta_G = t(F)``, SPEC 5):

- ``global``: no offsets (one threshold, ``theta_G``);
- ``per-class`` / ``per-group`` (closed set): ``a_r = theta_{c(r)} - theta_G``
  with ``theta_c`` the ``ceil(F * M_c)``-th smallest negative distance of the
  class's (group's) queries, ``b_r = 0``; a row of a class the file does not
  know keeps offset 0 and is counted as uncalibrated;
- ``cluster:K`` (open set, after Terhoerst et al.'s fair score
  normalisation): K centroids fitted by FAISS k-means (seeded, one thread, so
  the same data give the same centroids), a row belongs to its nearest
  centroid (ties to the lower index), ``a_r = b_r = (theta_k - theta_G) / 2``.

:func:`fit` fits one, :meth:`Calibration.to_json` / :func:`load_calibration`
write and read the versioned file, :meth:`Calibration.offsets` gives the
offsets of new rows, and :meth:`Calibration.adjusted_distances` /
:meth:`Calibration.accept` are the deployment API: the fix that was measured
is the fix that ships. No terminal output; the only file read is the
calibration file itself (:func:`load_calibration`).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import counts
from . import options as opt
from ._version import __version__
from .errors import ConfigError, InputError

SCHEMA = "opis-calibration"
VERSION = 1
#: ``--method`` names; ``cluster:K`` is the fourth form
METHODS = ("global", "per-class", "per-group")
METHOD_FORMS = METHODS + ("cluster:K",)


def parse_method(text: str) -> tuple[str, int | None]:
    """``"cluster:8"`` -> ``("cluster", 8)``; ``"per-class"`` -> ``("per-class", None)``."""
    t = str(text).strip()
    if t in METHODS:
        return t, None
    if t.startswith("cluster:"):
        try:
            k = int(t[8:])
        except ValueError:
            k = 0
        if k >= 1:
            return "cluster", k
        raise ConfigError(f"--method {text}: K must be a positive integer, e.g. cluster:8")
    raise ConfigError(f"--method {text!r}: expected one of {', '.join(METHOD_FORMS)}")


@dataclass(frozen=True)
class Offsets:
    """Per-row offsets of some rows: ``a`` as query, ``b`` as gallery item;
    ``uncalibrated`` rows kept offset 0 (a class or group the calibration
    does not know, or a centroid without negatives)."""

    a: np.ndarray
    b: np.ndarray
    uncalibrated: int


@dataclass(frozen=True)
class Calibration:
    """A fitted calibration (SPEC 11); its JSON is :meth:`to_dict`."""

    method: str                       # "global", "per-class", "per-group" or "cluster:K"
    metric: str
    target_far: float
    global_threshold: float
    thresholds: dict[str, float] | tuple[float | None, ...] | None = None
    centroids: np.ndarray | None = None   # (K, D) float64 for cluster:K
    dim: int | None = None
    fitted_on: dict = field(default_factory=dict)

    # -- offsets -----------------------------------------------------------------
    def offsets(self, embeddings=None, labels: Sequence | None = None,
                groups: Sequence | None = None) -> Offsets:
        """The offsets of rows: by label (per-class), group (per-group) or
        nearest centroid (cluster:K, from the embeddings)."""
        kind, _ = parse_method(self.method)
        if kind == "global":
            n = len(labels) if labels is not None else len(embeddings)
            z = np.zeros(n)
            return Offsets(z, z.copy(), 0)
        if kind in ("per-class", "per-group"):
            keys = labels if kind == "per-class" else groups
            if keys is None:
                need = "labels" if kind == "per-class" else "group column (--group-column)"
                raise ConfigError(f"a {kind} calibration needs the {need} of the rows it adjusts")
            th = self.thresholds
            a = np.array([th.get(str(k), np.nan) - self.global_threshold
                          if str(k) in th else np.nan for k in keys], np.float64)
            miss = np.isnan(a)
            a[miss] = 0.0
            return Offsets(a, np.zeros(len(a)), int(miss.sum()))
        k = self.assign(embeddings)
        th = np.array([np.nan if v is None else v for v in self.thresholds], np.float64)
        off = (th[k] - self.global_threshold) / 2
        miss = np.isnan(off)
        off[miss] = 0.0
        return Offsets(off, off.copy(), int(miss.sum()))

    def assign(self, embeddings) -> np.ndarray:
        """Nearest centroid of every row under the metric (ties to the lower index)."""
        x = np.asarray(embeddings, np.float64)
        if x.ndim != 2 or x.shape[1] != self.centroids.shape[1]:
            raise InputError(f"the calibration's centroids have {self.centroids.shape[1]} "
                             f"dimensions, the embeddings {x.shape[-1] if x.ndim else 0}")
        c = self.centroids
        out = np.empty(len(x), np.int64)
        for s in range(0, len(x), 16384):
            xb = x[s:s + 16384]
            if self.metric == "cosine":
                xn = xb / np.linalg.norm(xb, axis=1, keepdims=True)
                cn = c / np.linalg.norm(c, axis=1, keepdims=True)
                d = 1.0 - xn @ cn.T
            else:
                d = ((xb * xb).sum(axis=1)[:, None] - 2.0 * xb @ c.T
                     + (c * c).sum(axis=1)[None, :])
            out[s:s + 16384] = np.argmin(d, axis=1)
        return out

    # -- deployment ----------------------------------------------------------------
    def adjusted_distances(self, queries, gallery, *, query_labels=None, query_groups=None,
                           gallery_labels=None, gallery_groups=None) -> np.ndarray:
        """``d' = d - a_q - b_g`` (float64, ``(nq, ng)``) of query and gallery
        embeddings, with the metric the calibration was fitted with. Labels
        (per-class) or groups (per-group) of the queries are needed by those
        methods; gallery offsets are 0 except for cluster:K."""
        q = np.asarray(queries, np.float64)
        g = np.asarray(gallery, np.float64)
        if self.metric == "cosine":
            qn = q / np.linalg.norm(q, axis=1, keepdims=True)
            gn = g / np.linalg.norm(g, axis=1, keepdims=True)
            d = 1.0 - qn @ gn.T
        else:
            d = np.sqrt(np.maximum((q * q).sum(axis=1)[:, None] - 2.0 * q @ g.T
                                   + (g * g).sum(axis=1)[None, :], 0.0))
        oq = self.offsets(q, query_labels, query_groups)
        og = self.offsets(g, gallery_labels if gallery_labels is not None else
                          ([""] * len(g)), gallery_groups if gallery_groups is not None else
                          ([""] * len(g)))
        return d - oq.a[:, None] - og.b[None, :]

    def accept(self, queries, gallery, **kw) -> np.ndarray:
        """Accept decisions ``d' <= global_threshold`` (bool, ``(nq, ng)``)."""
        return self.adjusted_distances(queries, gallery, **kw) <= self.global_threshold

    # -- the file --------------------------------------------------------------------
    def to_dict(self) -> dict:
        d: dict[str, Any] = {"schema": SCHEMA, "version": VERSION, "method": self.method,
                             "metric": self.metric, "target_far": self.target_far,
                             "global_threshold": self.global_threshold}
        if isinstance(self.thresholds, dict):
            d["thresholds"] = {k: self.thresholds[k] for k in sorted(self.thresholds)}
        elif self.thresholds is not None:
            d["thresholds"] = list(self.thresholds)
        if self.centroids is not None:
            d["centroids"] = [[float(v) for v in row] for row in self.centroids]
        if self.dim is not None:
            d["dim"] = self.dim
        d["fitted_on"] = self.fitted_on
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n"


def _number(v: Any, what: str, where: str, allow_null: bool = False) -> float | None:
    if v is None and allow_null:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise InputError(f"{where}: {what} must be a finite number, got {json.dumps(v)[:40]}")
    return float(v)


def calibration_from_dict(d: Any, where: str = "calibration") -> Calibration:
    """A :class:`Calibration` from its JSON object, checked (one-line errors)."""
    if not isinstance(d, dict) or d.get("schema") != SCHEMA:
        raise InputError(f"{where}: not an opis calibration file (expected \"schema\": "
                         f"\"{SCHEMA}\"; write one with opis calibrate --out)")
    if d.get("version") != VERSION:
        raise InputError(f"{where}: calibration file version {json.dumps(d.get('version'))} is "
                         f"not supported (this opis reads version {VERSION})")
    method = d.get("method")
    try:
        kind, k = parse_method(method)
    except ConfigError:
        raise InputError(f"{where}: unknown method {json.dumps(method)[:40]}; expected one of "
                         f"{', '.join(METHOD_FORMS)}") from None
    metric = d.get("metric")
    if metric not in opt.METRICS:
        raise InputError(f"{where}: metric {json.dumps(metric)[:40]}: expected one of "
                         f"{', '.join(opt.METRICS)}")
    far = _number(d.get("target_far"), "target_far", where)
    g = _number(d.get("global_threshold"), "global_threshold", where)
    th: Any = None
    cent = None
    dim = d.get("dim")
    if kind in ("per-class", "per-group"):
        raw = d.get("thresholds")
        if not isinstance(raw, dict):
            raise InputError(f"{where}: a {kind} calibration needs \"thresholds\": a map from "
                             "label to distance")
        th = {}
        for lab, v in raw.items():
            if not isinstance(lab, str) or lab == "":
                raise InputError(f"{where}: thresholds: every entry needs a non-empty label")
            th[lab] = _number(v, f"the threshold of {json.dumps(lab)[:40]}", where)
    elif kind == "cluster":
        raw_c = d.get("centroids")
        try:
            cent = np.asarray(raw_c, np.float64)
        except (TypeError, ValueError):
            cent = None
        if cent is None or cent.ndim != 2 or cent.shape[0] != k or not np.isfinite(cent).all():
            raise InputError(f"{where}: a {method} calibration needs \"centroids\": {k} rows of "
                             "finite numbers of one length")
        raw = d.get("thresholds")
        if not isinstance(raw, list) or len(raw) != k:
            raise InputError(f"{where}: a {method} calibration needs \"thresholds\": {k} "
                             "distances (null for a centroid without negatives)")
        th = tuple(_number(v, f"thresholds[{i}]", where, allow_null=True)
                   for i, v in enumerate(raw))
        if dim is not None and dim != cent.shape[1]:
            raise InputError(f"{where}: dim {dim} differs from the centroids' "
                             f"{cent.shape[1]} columns")
        dim = int(cent.shape[1])
    return Calibration(method=str(method), metric=metric, target_far=far, global_threshold=g,
                       thresholds=th, centroids=cent, dim=dim if isinstance(dim, int) else None,
                       fitted_on=d.get("fitted_on") if isinstance(d.get("fitted_on"), dict)
                       else {})


def load_calibration(path: str | Path) -> tuple[Calibration, dict]:
    """Read a calibration file; returns it and its provenance (path, sha256, method)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise InputError(f"{p}: cannot read the calibration file ({e.strerror or e})") from None
    try:
        d = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise InputError(f"{p}: not valid JSON ({str(e).splitlines()[0][:80]})") from None
    cal = calibration_from_dict(d, str(p))
    return cal, {"path": str(p), "sha256": hashlib.sha256(raw).hexdigest(), "method": cal.method}


def check_applies(cal: Calibration, metric: str, dim: int, where: str = "--calibration") -> None:
    """The calibration can adjust data of this metric and dimension."""
    if cal.metric != metric:
        raise InputError(f"{where}: fitted with --metric {cal.metric}, the evaluation uses "
                         f"--metric {metric}")
    if cal.centroids is not None and cal.centroids.shape[1] != dim:
        raise InputError(f"{where}: the centroids have {cal.centroids.shape[1]} dimensions, the "
                         f"embeddings {dim}")


# ------------------------------------------------------------------ fitting
def _kmeans(x: np.ndarray, k: int, metric: str, seed: int) -> np.ndarray:
    """FAISS k-means on float32 rows (normalised for cosine), one thread: deterministic."""
    import faiss

    from .engines.workers import faiss_threads

    if k > len(x):
        raise ConfigError(f"--method cluster:{k}: more centroids than the {len(x)} rows")
    with faiss_threads(1):
        km = faiss.Kmeans(x.shape[1], k, niter=25, seed=int(seed), spherical=metric == "cosine",
                          verbose=False, min_points_per_centroid=1, max_points_per_centroid=10**9)
        km.train(np.ascontiguousarray(x, np.float32))
    return np.asarray(km.centroids, np.float64)


def fit_many(embeddings, labels: Sequence, methods: Sequence[str], *, target_far: float,
             metric: str = opt.METRIC, groups: Sequence | None = None,
             is_query: Sequence[bool] | None = None, is_gallery: Sequence[bool] | None = None,
             seed: int = opt.SEED, block_bytes: int = opt.BLOCK_BYTES, progress=None,
             fitted_on: dict | None = None) -> list[Calibration]:
    """Fit several methods on the same data in one pair of passes (SPEC 11)."""
    from .engines.fit import order_stats
    from .engines.transfer import side_row_pairs
    from .prepare import _float32_rows, prepare

    parsed = [parse_method(m) for m in methods]
    if not (0.0 < float(target_far) <= 1.0):
        raise ConfigError(f"--target far:{target_far:g}: F must be in (0, 1]")
    need_groups = any(k == "per-group" for k, _ in parsed)
    if need_groups and groups is None:
        raise ConfigError("--method per-group needs a group column (--group-column)")
    prep = prepare(embeddings, labels, metric=metric, groups=groups if need_groups else None,
                   is_query=is_query, is_gallery=is_gallery)
    nq = len(prep.q_rows)
    P, M = prep.class_pair_counts()
    ev = counts.evaluated(P, M)
    if ev.sum() < 2:
        raise InputError(f"only {int(ev.sum())} class(es) can be evaluated; need at least 2 to "
                         "fit a calibration")
    zq = np.zeros(nq, np.int64)
    zg = np.zeros(len(prep.g_rows), np.int64)
    _, neg_row = side_row_pairs(prep, zq, zg, (0,))
    cols, ranks = [np.where(ev[prep.q_class], 0, -1)], [counts.ceil_rank(target_far,
                                                                          int(M[ev].sum()))]
    base = 1
    layout = []
    for kind, k in parsed:
        if kind == "global":
            layout.append((kind, k, None, None))
            continue
        if kind == "per-class":
            ids, names = prep.q_class, list(prep.class_labels)
        elif kind == "per-group":
            ids, names = prep.q_group, list(prep.group_labels)
        else:
            x = _float32_rows(np.asarray(embeddings), metric)
            proto = Calibration("cluster:%d" % k, metric, float(target_far), 0.0,
                                centroids=_kmeans(x, k, metric, seed))
            ids, names = proto.assign(np.asarray(embeddings)[prep.q_rows]), list(range(k))
            layout.append((kind, k, base, proto.centroids))
        n = len(names)
        m = np.bincount(ids, weights=neg_row, minlength=n).astype(np.int64)
        cols.append(np.asarray(ids, np.int64) + base)
        ranks += [counts.ceil_rank(target_far, int(v)) if v > 0 else 0 for v in m]
        if kind != "cluster":
            layout.append((kind, k, base, names))
        base += n
    stats = order_stats(prep, np.stack(cols, axis=1), np.asarray(ranks, np.int64), block_bytes,
                        progress)
    theta_g = float(stats[0])
    info = dict(fitted_on or {})
    info.setdefault("rows", int(prep.n_samples))
    info.setdefault("classes", int(prep.n_classes))
    info["tool_version"] = __version__
    out = []
    for kind, k, start, extra in layout:
        common = dict(metric=metric, target_far=float(target_far), global_threshold=theta_g,
                      dim=int(prep.dim), fitted_on=info)
        if kind == "global":
            out.append(Calibration("global", **common))
        elif kind == "cluster":
            th = tuple(None if np.isnan(v) else float(v) for v in stats[start:start + k])
            out.append(Calibration(f"cluster:{k}", thresholds=th, centroids=extra,
                                   **{**common, "fitted_on": {**info, "seed": int(seed)}}))
        else:
            vals = stats[start:start + len(extra)]
            th = {str(n): float(v) for n, v in zip(extra, vals) if not np.isnan(v)}
            out.append(Calibration(kind, thresholds=th, **common))
    return out


def fit(embeddings, labels: Sequence, *, method: str = "global", target: str = opt.TARGET,
        **kw) -> Calibration:
    """Fit one calibration (SPEC 11) at ``target`` (``far:F``) on all the rows given.

    Parameters
    ----------
    embeddings, labels : the calibration data (as :func:`opis_cli.evaluate`)
    method : ``global``, ``per-class``, ``per-group`` (needs ``groups``) or ``cluster:K``
    target : ``far:F``, the global FAR the fitted thresholds are set at
    **kw : the keywords of :func:`fit_many`: ``metric``, ``groups``, ``is_query``,
        ``is_gallery``, ``seed`` (of k-means), ``block_bytes``, ``progress``, ``fitted_on``
    """
    t = str(target)
    if not t.startswith("far:"):
        raise ConfigError(f"--target {t}: a calibration is fitted at a FAR, e.g. far:0.01")
    try:
        f = float(t[4:])
    except ValueError:
        raise ConfigError(f"--target {t}: F must be a number in (0, 1], e.g. far:0.01") from None
    return fit_many(embeddings, labels, [method], target_far=f, **kw)[0]
