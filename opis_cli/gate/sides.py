"""The two sides of a gate or a comparison: rules, bootstraps, pairing.

What ``opis evaluate`` (with rules), ``opis gate`` and ``opis compare`` do
with their sides between reading them (:mod:`opis_cli.app`: a result JSON or
an embeddings input, held as an :class:`opis_cli.app.Loaded`) and showing
the outcome:

- rules come from the options and the config file (:func:`collect_rules`);
- ``ci`` rules and intervals need bootstraps on both sides, drawn alike so
  that they pair (:func:`pair_bootstraps`);
- the deployment view measures both sides at one threshold
  (:func:`deployment_view`);
- :class:`EvaluateGate` checks the gate options of ``opis evaluate`` before
  the evaluation and applies them to the fresh result;
- :func:`run_gate` and :func:`run_compare` are ``opis gate`` and ``opis
  compare`` without the terminal.

No typer, no rich: functions return objects (a ``GateOutcome``, a
``Comparison``) that ``opis_cli.render`` shows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from .. import options as opt
from ..app import Loaded, evaluated, load_result
from ..errors import ConfigError
from .rules import (DEPLOYMENT_METRICS, GateConfig, GateOutcome, Rule, Side,
                    baseline_needed_error, deployment_unavailable, no_rules_error)

if TYPE_CHECKING:  # pragma: no cover
    from ..metrics.bootstrap import Bootstrap
    from ..results import EvaluationResult
    from .compare import Comparison

#: Option name -> the rule texts given with it (``{"max": ["opis=0.02"], ...}``).
RuleOptions = Mapping[str, Sequence[str] | None]


def side(loaded: Loaded) -> Side:
    """What the rules read of a side: the headline and fairness metrics and the bootstrap."""
    return Side(loaded.name, loaded.result.gate_metrics(), loaded.bootstrap)


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
        base = side(self.baseline) if self.baseline else None
        return evaluate_rules(self.rules, side(cand), base, confidence=self.confidence,
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
    outcome = evaluate_rules(rules, side(cand), side(base) if base else None,
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
        cside, bside = side(cand), side(base)
        cside = replace(cside, headline={**cside.headline, **dep.metrics("candidate")})
        bside = replace(bside, headline={**bside.headline, **dep.metrics("baseline")})
        outcome = evaluate_rules(rules, cside, bside, confidence=conf, missing=dep.missing)
    return cmp, outcome, base, cand
