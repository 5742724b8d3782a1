"""The two sides of a gate or a comparison: reading, evaluating and pairing them.

What ``opis evaluate`` (with rules), ``opis gate`` and ``opis compare`` do
between parsing their options and showing the outcome:

- a side is a result JSON (:func:`load_result`, with its stored bootstrap
  and optionally its ``--curves`` table) or an embeddings file
  (:func:`evaluate_file`), held as a :class:`Loaded`;
- rules come from the options and the config file (:func:`collect_rules`);
- ``ci`` rules and intervals need bootstraps on both sides, drawn alike so
  that they pair (:func:`pair_bootstraps`);
- :class:`EvaluateGate` checks the gate options of ``opis evaluate`` before
  the evaluation and applies them to the fresh result;
- :func:`run_gate` and :func:`run_compare` are ``opis gate`` and ``opis
  compare`` without the terminal.

No typer, no rich: functions return objects (a ``GateOutcome``, a
``Comparison``) that ``opis_cli.render`` shows.
"""

from __future__ import annotations

import json
import warnings as _warnings
from dataclasses import KW_ONLY, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from .. import options as opt
from ..errors import ConfigError, InputError
from .rules import (DEPLOYMENT_METRICS, GateConfig, GateOutcome, Rule, Side,
                    baseline_needed_error, deployment_unavailable, no_rules_error)

if TYPE_CHECKING:  # pragma: no cover
    from ..engines.base import Progress
    from ..metrics.bootstrap import Bootstrap
    from ..results import EvaluationResult
    from .compare import Comparison

#: Option name -> the rule texts given with it (``{"max": ["opis=0.02"], ...}``).
RuleOptions = Mapping[str, Sequence[str] | None]


# ------------------------------------------------------------------ one side


@dataclass(frozen=True)
class Loaded:
    """One side: a result (in-process or read from JSON), its curves and bootstrap."""

    name: str
    result: Any
    bootstrap: Any | None = None
    curves: Any | None = None
    #: ``at(threshold) -> OperatingPoint``: measures this side at any distance
    #: threshold (embeddings sides; None for a result JSON).
    at: Callable[[float], Any] | None = None

    @property
    def side(self) -> Side:
        """What the rules read: the headline and fairness metrics and the bootstrap."""
        return Side(self.name, self.result.gate_metrics(), self.bootstrap)


def load_result(path: str | Path, curves: str | Path | None = None) -> Loaded:
    """Read a result JSON (``opis evaluate --json``), its stored bootstrap and,
    when ``curves`` is given, its per-class curves table (``--curves``)."""
    from ..io import read_curves, read_result
    from ..io.curves import curves_from_table
    from ..metrics.bootstrap import Bootstrap

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
    """Whether a side names a result JSON (else an embeddings file)."""
    return Path(path).suffix.lower() == ".json"


@dataclass(frozen=True)
class Reader:
    """How to read an embeddings file: the reader options of ``opis evaluate``.

    The fields after ``gallery_column`` are keyword-only: the input format
    (None: detected from the path) and the options of some formats (see
    :func:`opis_cli.io.read_dataset`).
    """

    labels: Path | None = None
    embedding_column: str = opt.EMBEDDING_COLUMN
    embedding_columns: str | None = None
    label_column: str = opt.LABEL_COLUMN
    group_column: str | None = None
    query_column: str | None = None
    gallery_column: str | None = None
    _: KW_ONLY
    format: str | None = None
    hf_split: str | None = None
    tensor_key: str | None = None
    tensor_labels_key: str | None = None
    dataset_key: str | None = None
    dataset_labels_key: str | None = None

    def format_options(self) -> dict[str, str | None]:
        """The format and format-specific keywords of :func:`opis_cli.io.read_dataset`."""
        return {"format": self.format, "hf_split": self.hf_split,
                "tensor_key": self.tensor_key, "tensor_labels_key": self.tensor_labels_key,
                "dataset_key": self.dataset_key, "dataset_labels_key": self.dataset_labels_key}


def evaluate_file(path: str | Path, reader: Reader = Reader(), *,
                  progress: "Progress | None" = None,
                  **options: Any) -> tuple["EvaluationResult", list[str]]:
    """Read one embeddings file and evaluate it with :func:`opis_cli.evaluate`.

    Returns the result and the engine's warnings (e.g. knn truncation), each
    once, whitespace collapsed, for the caller to show. ``progress`` gets the
    reader's stage as ``"reading"``. The embeddings are read into an array of
    their own and handed over (``copy=False``): the rows are held once.
    """
    from ..api import evaluate
    from ..io import read_dataset

    reader_cb = (lambda done, total: progress("reading", done, total)) if progress else None
    ds = read_dataset(str(path), labels_path=str(reader.labels) if reader.labels else None,
                      embedding_column=reader.embedding_column,
                      embedding_columns=reader.embedding_columns,
                      label_column=reader.label_column, group_column=reader.group_column,
                      query_column=reader.query_column, gallery_column=reader.gallery_column,
                      progress=reader_cb, owned=True, **reader.format_options())
    sources = [{"path": s.path, "sha256": s.sha256, "size_bytes": s.size_bytes}
               for s in ds.sources]
    try:
        with _warnings.catch_warnings(record=True) as caught:
            _warnings.simplefilter("always")
            result = evaluate(ds.embeddings, ds.labels, groups=ds.groups, is_query=ds.is_query,
                              is_gallery=ds.is_gallery, progress=progress, sources=sources,
                              group_column=reader.group_column, copy=False, **options)
    except InputError as e:
        raise InputError(f"{path}: {e}") from e
    shown: list[str] = []
    for w in caught:
        msg = " ".join(str(w.message).split())
        if msg not in shown and issubclass(w.category, UserWarning):
            shown.append(msg)
    return result, shown


def measure_file(path: str | Path, threshold: float, reader: Reader = Reader(), *,
                 options: Mapping[str, Any] | None = None,
                 block_bytes: int = opt.BLOCK_BYTES) -> Any:
    """One embeddings file at one distance threshold: :func:`opis_cli.api.operating_point`
    with the ``metric``, ``utility`` and ``beta`` of ``options`` (how it was evaluated)."""
    from ..api import operating_point
    from ..io import read_dataset

    o = dict(options or {})
    ds = read_dataset(str(path), labels_path=str(reader.labels) if reader.labels else None,
                      embedding_column=reader.embedding_column,
                      embedding_columns=reader.embedding_columns,
                      label_column=reader.label_column, query_column=reader.query_column,
                      gallery_column=reader.gallery_column, **reader.format_options())
    try:
        return operating_point(ds.embeddings, ds.labels, threshold, is_query=ds.is_query,
                               is_gallery=ds.is_gallery, metric=o.get("metric", opt.METRIC),
                               utility=o.get("utility", opt.UTILITY),
                               beta=o.get("beta", opt.BETA), block_bytes=block_bytes)
    except InputError as e:
        raise InputError(f"{path}: {e}") from e


def point_on_grid(loaded: Loaded, threshold: float) -> Any | None:
    """``loaded`` at ``threshold`` from its curves, when the threshold is one of its
    grid thresholds (within 1e-9); else None."""
    from ..metrics.threshold import operating_point

    res, cv = loaded.result, loaded.curves
    if cv is None:
        return None
    th = res.thresholds
    k = next((i for i, t in enumerate(th)
              if abs(t - threshold) <= 1e-9 * max(1.0, abs(t))), None)
    if k is None:
        return None
    return operating_point(threshold, cv.tp[:, k], cv.fp[:, k], cv.positives, cv.negatives,
                           cv.utility[:, k])


def measure_at(loaded: Loaded, threshold: float) -> Any | None:
    """``loaded`` at ``threshold``: from its curves when the threshold is on its
    grid (no extra pass), else by ``loaded.at`` (embeddings sides); None when
    neither is possible (a result JSON without curves at that threshold)."""
    point = point_on_grid(loaded, threshold)
    if point is None and loaded.at is not None:
        point = loaded.at(threshold)
    return point


def deployment_view(base: Loaded, cand: Loaded, threshold: float | None = None) -> "Any":
    """Both sides at the deployed threshold: ``threshold`` (``--threshold``) or
    the baseline's recommended one. A side that cannot be measured there leaves
    its operating point None and ``missing`` says what it needs."""
    from ..results import OperatingPoint
    from .compare import Deployment

    rt = base.result.recommended_threshold
    if threshold is None:
        t, source = rt.value, "baseline recommended"
        bp = OperatingPoint.of_recommended(rt)
    else:
        t, source = float(threshold), "--threshold"
        bp = measure_at(base, t)
    cp = measure_at(cand, t)
    missing = None
    for who, loaded, point in (("baseline", base, bp), ("candidate", cand, cp)):
        if point is None and missing is None:
            missing = (f"the deployment view at threshold {t:.6g} needs the {who}'s embeddings "
                       f"(or its --{who}-curves table with that threshold on its grid); "
                       f"{loaded.name} is a result JSON without them")
    return Deployment(t, source, bp, cp, missing)


# ------------------------------------------------------------------ rules


def collect_rules(rule_options: RuleOptions, *, config: Path | None,
                  discover: bool) -> tuple[list[Rule], GateConfig | None]:
    """Rules of the config file (explicit ``config``, or found when ``discover``)
    followed by the command line's."""
    from .rules import find_config, load_config, rules_from_options

    cli_rules = rules_from_options(rule_options)
    cfg = None
    if config is not None:
        cfg = load_config(config)
    elif discover:
        found = find_config()
        cfg = load_config(found) if found else None
    return (list(cfg.rules) if cfg else []) + cli_rules, cfg


def needs_bootstrap(rules: Sequence[Rule]) -> bool:
    """Whether a rule is a ``ci`` rule (needs bootstraps on both sides)."""
    return any(r.ci for r in rules)


def _confidence(given: float | None, cfg: GateConfig | None) -> float | None:
    return given or (cfg.confidence if cfg else None)


# ------------------------------------------------------------------ bootstraps


def with_bootstrap(loaded: Loaded, *, partner: "Bootstrap | None" = None,
                   resamples: int | None, seed: int, confidence: float | None) -> Loaded:
    """``loaded`` with a bootstrap computed from its curves, when it has curves.

    When ``partner`` (the other side's bootstrap) exists its ``resamples``,
    ``seed`` and ``confidence`` are used, so that both sides are resampled
    identically (paired); a stored bootstrap that already pairs is kept.
    """
    from ..metrics.bootstrap import bootstrap_curves

    if loaded.curves is None:
        return loaded
    if partner is not None:
        if loaded.bootstrap is not None and loaded.bootstrap.pairs_with(partner):
            return loaded
        b, s, c = partner.resamples, partner.seed, partner.confidence
    elif loaded.bootstrap is not None:
        return loaded
    else:
        b, s = resamples or opt.RESAMPLES, seed
        c = confidence or opt.CONFIDENCE
    cv, res = loaded.curves, loaded.result
    return replace(loaded, bootstrap=bootstrap_curves(cv.utility, res.thresholds, cv.labels,
                                                      res.epsilon, resamples=b, seed=s,
                                                      confidence=c))


def pair_bootstraps(base: Loaded, cand: Loaded, *, resamples: int | None, seed: int,
                    confidence: float | None) -> tuple[Loaded, Loaded]:
    """Both sides with bootstraps where curves allow, paired when possible.

    A stored bootstrap (either side's, the baseline's first) decides ``B``
    and the seed for the side computed from curves.
    """
    partner = base.bootstrap or cand.bootstrap
    base = with_bootstrap(base, partner=partner, resamples=resamples, seed=seed,
                          confidence=confidence)
    cand = with_bootstrap(cand, partner=base.bootstrap, resamples=resamples, seed=seed,
                          confidence=confidence)
    return base, cand


# ------------------------------------------------------------------ opis evaluate's gate


@dataclass
class EvaluateGate:
    """The gate options of ``opis evaluate``: checked before the evaluation runs
    (:meth:`plan`), applied to the fresh result afterwards (:meth:`apply`)."""

    rules: list[Rule] = field(default_factory=list)
    baseline: Loaded | None = None
    confidence: float | None = None
    resamples: int | None = None
    seed: int = opt.SEED
    _boot: Any = None

    @classmethod
    def plan(cls, rule_options: RuleOptions | None = None, *, baseline: Path | None = None,
             config: Path | None = None, bootstrap: int | None = None, seed: int = opt.SEED,
             junit: Path | None = None, confidence: float | None = None) -> "EvaluateGate":
        """Check the options and read the baseline; raises before any evaluation work.

        ``bootstrap`` is ``--bootstrap N`` (store a bootstrap with the result);
        ``junit`` is only checked here (``--junit`` needs rules and a writable
        path).
        """
        from ..io.output import check_output_path

        opt.validate(bootstrap=bootstrap, confidence=confidence)
        rules, cfg = collect_rules(rule_options or {}, config=config, discover=False)
        if config is not None and not rules:
            raise ConfigError(f"{config}: no gate rules in this file")
        deployed = [r for r in rules if r.metric in DEPLOYMENT_METRICS]
        if deployed:
            raise deployment_unavailable(deployed[0])
        base_path = baseline or (cfg.baseline if cfg else None)
        if rules and any(r.needs_baseline for r in rules) and base_path is None:
            raise baseline_needed_error(next(r for r in rules if r.needs_baseline))
        if junit is not None and not rules:
            raise ConfigError("--junit needs gate rules (--max, --min, --max-increase, "
                              "--max-decrease or --config)")
        if junit is not None:
            check_output_path(junit, "--junit")
        base = load_result(base_path) if (base_path is not None and rules) else None
        if base is not None and needs_bootstrap(rules) and base.bootstrap is None:
            raise ConfigError(f"{base.name}: the 'ci' rules need the baseline's bootstrap; "
                              "evaluate the baseline with --bootstrap N")
        return cls(rules, base, _confidence(confidence, cfg), bootstrap, seed)

    def bootstrap(self, result: "EvaluationResult") -> "Bootstrap | None":
        """The bootstrap asked for with ``--bootstrap N`` (computed once), or None."""
        from ..metrics.bootstrap import bootstrap_result

        if self.resamples and self._boot is None:
            self._boot = bootstrap_result(result, resamples=self.resamples, seed=self.seed,
                                          confidence=self.confidence or opt.CONFIDENCE)
        return self._boot

    def result_json(self, result: "EvaluationResult") -> str:
        """The result JSON, with the ``bootstrap`` key when ``--bootstrap N`` was given."""
        from ..metrics.bootstrap import result_document

        boot = self.bootstrap(result)
        if boot is None:
            return result.to_json()
        return json.dumps(result_document(result, boot), indent=2, allow_nan=False) + "\n"

    def apply(self, result: "EvaluationResult", source: str = "") -> GateOutcome | None:
        """The rules applied to ``result`` (named ``source``); None without rules."""
        from .compare import comparability_warnings
        from .rules import evaluate_rules

        if not self.rules:
            return None
        cand = evaluated(source or "result", result, self.bootstrap(result))
        if needs_bootstrap(self.rules):
            cand = with_bootstrap(cand, partner=self.baseline.bootstrap if self.baseline
                                  else None, resamples=self.resamples, seed=self.seed,
                                  confidence=self.confidence)
        # Each result on its own FAR range is the like-with-like comparison (SPEC 5).
        warnings = (comparability_warnings(self.baseline.result, result, "own-range")
                    if self.baseline else [])
        base = self.baseline.side if self.baseline else None
        return evaluate_rules(self.rules, cand.side, base, confidence=self.confidence,
                              warnings=warnings)


# ------------------------------------------------------------------ opis gate


def run_gate(result: Path, rule_options: RuleOptions, *, baseline: Path | None = None,
             config: Path | None = None, discover: bool = True, curves: Path | None = None,
             baseline_curves: Path | None = None, resamples: int | None = None,
             seed: int = opt.SEED,
             confidence: float | None = None) -> tuple[GateOutcome, Loaded]:
    """``opis gate``: the rules applied to a saved result (and baseline).

    Rules come from ``rule_options`` and the config file (``config``, or the
    one found from the current folder when ``discover``). The baseline is
    read when given, or from the config when a rule needs one. Returns the
    outcome and the candidate side.
    """
    from .compare import comparability_warnings
    from .rules import evaluate_rules

    rules, cfg = collect_rules(rule_options, config=config, discover=discover)
    cand = load_result(result, curves)
    base_path = baseline or (cfg.baseline if cfg else None)
    base = None
    if base_path is not None and (baseline is not None or any(r.needs_baseline for r in rules)):
        base = load_result(base_path, baseline_curves)
    if base is not None and needs_bootstrap(rules):
        base, cand = pair_bootstraps(base, cand, resamples=resamples, seed=seed,
                                     confidence=confidence)
    warnings = comparability_warnings(base.result, cand.result, "own-range") if base else []
    outcome = evaluate_rules(rules, cand.side, base.side if base else None,
                             confidence=_confidence(confidence, cfg), warnings=warnings)
    return outcome, cand


# ------------------------------------------------------------------ opis compare


def compare_rules(rule_options: RuleOptions, *, config: Path | None, discover: bool,
                  junit: Path | None = None) -> tuple[list[Rule], GateConfig | None, bool]:
    """The rules of ``opis compare`` and whether it gates (any rule option,
    ``--config`` or ``--gate`` given)."""
    gating = bool(any(rule_options.values()) or config or discover)
    rules, cfg = collect_rules(rule_options, config=config, discover=discover)
    if gating and not rules:
        raise no_rules_error()
    if (junit is not None) and not gating:
        raise ConfigError("--junit needs gate rules (--max, --min, --max-increase, "
                          "--max-decrease, --config or --gate)")
    return rules, cfg, gating


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
    tables when given), embeddings files evaluated with ``evaluate``.

    An embeddings side gets the options ``given`` (not None), else those of
    the result JSON side (the baseline's first), else the defaults. By
    default each side is evaluated on its own calibration range from the same
    ``far_range`` (SPEC 5), so that OPIS compares like with like. With
    ``same_thresholds`` it is evaluated on the other side's calibration range
    and number of thresholds instead (the baseline's; the candidate JSON's
    when only the baseline is an embeddings file): both share the distance
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


def run_compare(base: Loaded, cand: Loaded, *, rules: Sequence[Rule], gating: bool,
                cfg: GateConfig | None = None, resamples: int | None = None,
                seed: int = opt.SEED, confidence: float | None = None,
                mode: str = "own-range", threshold: float | None = None,
                ) -> tuple["Comparison", GateOutcome | None, Loaded, Loaded]:
    """The comparison of two sides (with bootstrap intervals when asked for or
    needed), its deployment view (at ``threshold``, else the baseline's
    recommended threshold) and, when ``gating``, the rules' outcome
    (``deployed_*`` rules read the deployment view)."""
    from .compare import compare_results
    from .rules import evaluate_rules

    conf = _confidence(confidence, cfg)
    if resamples is not None or needs_bootstrap(rules):
        # A stored bootstrap decides B and seed so that both sides pair.
        base, cand = pair_bootstraps(base, cand, resamples=resamples, seed=seed,
                                     confidence=conf)
    dep = deployment_view(base, cand, threshold)
    cmp = compare_results(base.result, cand.result, baseline_name=base.name,
                          candidate_name=cand.name, base_bootstrap=base.bootstrap,
                          cand_bootstrap=cand.bootstrap, confidence=conf, mode=mode,
                          deployment=dep)
    outcome = None
    if gating:
        # The comparison carries the warnings (printed, in JSON and Markdown once).
        cside, bside = cand.side, base.side
        cside = replace(cside, headline={**cside.headline, **dep.metrics("candidate")})
        bside = replace(bside, headline={**bside.headline, **dep.metrics("baseline")})
        outcome = evaluate_rules(rules, cside, bside, confidence=conf, missing=dep.missing)
    return cmp, outcome, base, cand
