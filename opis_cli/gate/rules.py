"""Release gate: rules on headline metrics, their config file, and the outcome.

No typer, no rich: options become rules with :func:`parse_rule` (the
command line's are gathered by :func:`opis_cli.gate.sides.collect_rules`,
with the config file's: :func:`find_config`, :func:`load_config`);
:func:`evaluate_rules` checks them and returns a :class:`GateOutcome`, which
``opis_cli.render`` shows (terminal table, JUnit XML, Markdown) and
:meth:`GateOutcome.to_dict` turns into JSON.

Rule forms (``METRIC`` is a key of ``EvaluationResult.gate_metrics()``: the
headline, the fairness metrics of SPEC 13 and the verification view of SPEC 14):

- ``max METRIC=V``: fails when the value is above ``V``;
- ``min METRIC=V``: fails when the value is below ``V``;
- ``max-increase METRIC=D`` (needs a baseline): fails when
  ``value > baseline + D``; ``D`` written ``P%`` is relative:
  ``value > baseline + P/100 * |baseline|``;
- ``max-decrease METRIC=D``: fails when ``value < baseline - D`` (or ``P%``);
- ``max-increase METRIC=ci`` / ``max-decrease METRIC=ci`` (OPIS and
  epsilon-OPIS only): fails only when the change is larger than its bootstrap
  interval, i.e. when the whole interval of ``candidate - baseline``
  (:func:`opis_cli.metrics.bootstrap.difference_interval`) lies above 0 (resp.
  below 0).

Comparisons allow a rounding slack of ``1e-12 * max(1, |limit|)`` so that a
value equal to its limit up to float rounding passes.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

from ..errors import ConfigError, ExitCode, InputError
from ..metrics.registry import DIRECTION as METRIC_DIRECTION, keys as metric_keys
from ..options import check_confidence
from ..render.format import num

if TYPE_CHECKING:  # pragma: no cover
    from ..metrics.bootstrap import Bootstrap, DifferenceInterval

# No numpy at import: ``opis evaluate`` parses its rules before it checks its input
# path, and an input error must come before the heavy imports (tests/test_startup.py).
# The bootstrap (numpy) loads where a 'ci' rule is checked.

#: The metrics with a bootstrap interval (``opis_cli.metrics.bootstrap.BOOTSTRAP_METRICS``,
#: repeated here without its numpy; tests/test_startup.py ties the two).
BOOTSTRAP_METRICS = ("opis", "epsilon_opis")

#: The metric lists and directions below come from the metrics registry
#: (``opis_cli.metrics.registry``: key, direction, JSON path, name, doc).

#: The keys of ``EvaluationResult.headline()``: the metric names rules accept.
HEADLINE_METRICS = metric_keys("headline")

#: SPEC 13 of the class block (``EvaluationResult.fairness_metrics()``): at the
#: recommended threshold, and ``fdr``/``garbe`` averaged over the calibration range.
FAIRNESS_METRICS = metric_keys("fairness")

#: SPEC 14 (``EvaluationResult.verification_metrics()``; results evaluated with
#: ``--verification`` only): the EER, the normalised minDCF, the FNMR at each FMR.
VERIFICATION_METRICS = metric_keys("verification")

#: Metrics of the deployment view (``opis compare`` only): the candidate at the
#: baseline's deployed threshold; ``deployed_far_ratio`` is candidate FAR / baseline FAR.
DEPLOYMENT_METRICS = metric_keys("deployment")

#: SPEC 16 (``EvaluationResult.diagnosis_metrics()``; results evaluated with
#: ``--diagnose`` only): overlapping class pairs, suspect rows (and their share
#: of the queries with a positive), conflicting duplicate groups. Lower is better.
DIAGNOSIS_METRICS = metric_keys("diagnosis")

#: Every metric name a rule accepts.
RULE_METRICS = (HEADLINE_METRICS + FAIRNESS_METRICS + VERIFICATION_METRICS + DEPLOYMENT_METRICS
                + DIAGNOSIS_METRICS)

#: +1: higher is better, -1: lower is better, 0: neither (the threshold itself).
DIRECTION = {k: METRIC_DIRECTION[k] for k in RULE_METRICS}

KINDS = ("max", "min", "max-increase", "max-decrease")
RELATIVE_KINDS = ("max-increase", "max-decrease")
CONFIG_NAMES = ("opis.toml", "pyproject.toml")
#: Keys of a gate config table besides the rule kinds.
CONFIG_SETTINGS = ("baseline", "confidence")

_SLACK = 1e-12


# ----------------------------------------------------------------- rules


@dataclass(frozen=True)
class Rule:
    """One gate rule.

    ``kind`` is one of :data:`KINDS`; ``amount`` the limit (``max``/``min``)
    or the allowed change; ``relative`` whether ``amount`` is a fraction of
    the baseline (written ``P%``; ``amount`` then holds ``P/100``); ``ci``
    whether the rule is the bootstrap form (``amount`` unused); ``source``
    where the rule came from (``"command line"`` or a config file).
    """

    kind: str
    metric: str
    amount: float = 0.0
    relative: bool = False
    ci: bool = False
    source: str = "command line"

    @property
    def needs_baseline(self) -> bool:
        return self.kind in RELATIVE_KINDS

    @property
    def text(self) -> str:
        if self.ci:
            v = "ci"
        elif self.relative:
            v = f"{self.amount * 100:g}%"
        else:
            v = f"{self.amount:g}"
        return f"{self.kind} {self.metric}={v}"


def _unknown_metric(metric: str, where: str) -> ConfigError:
    """The nearest name when there is one (difflib), else every valid name."""
    import difflib

    near = difflib.get_close_matches(metric.lower(), RULE_METRICS, n=1, cutoff=0.6)
    if near:
        return ConfigError(f"unknown metric {metric!r} in {where}; did you mean {near[0]!r}?")
    return ConfigError(f"unknown metric {metric!r} in {where}; valid names: "
                       f"{', '.join(RULE_METRICS)}")


def parse_rule(kind: str, text: str, *, source: str = "command line") -> Rule:
    """Parse ``METRIC=VALUE`` for a rule of ``kind`` (``--max opis=0.02``)."""
    if kind not in KINDS:
        raise ConfigError(f"unknown rule kind {kind!r}; expected one of {', '.join(KINDS)}")
    where = f"--{kind} {text}" if source == "command line" else f"{source}: {kind} {text}"
    metric, sep, value = str(text).partition("=")
    metric, value = metric.strip(), value.strip()
    if not sep or not metric or not value:
        raise ConfigError(f"{where}: expected METRIC=VALUE, e.g. --{kind} opis=0.02")
    return make_rule(kind, metric, value, source=source, where=where)


def make_rule(kind: str, metric: str, value, *, source: str = "command line",
              where: str | None = None) -> Rule:
    """A rule from its parts; ``value`` is a number, ``"P%"``, ``"ci"`` or a number string."""
    where = where or f"{source}: {kind} {metric}={value}"
    if metric not in RULE_METRICS:
        raise _unknown_metric(metric, where)
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a number, 'P%' or 'ci', got {value!r}")
    if isinstance(value, (int, float)):
        amount, relative, ci = float(value), False, False
    else:
        s = str(value).strip()
        ci = s.lower() == "ci"
        relative = s.endswith("%")
        amount = 0.0
        if not ci:
            try:
                amount = float(s[:-1] if relative else s)
            except ValueError:
                raise ConfigError(f"{where}: expected a number, 'P%' or 'ci', got {s!r}") from None
            if relative:
                amount /= 100.0
    if not ci and not math.isfinite(amount):
        raise ConfigError(f"{where}: the limit must be a finite number")
    if kind in ("max", "min") and (relative or ci):
        raise ConfigError(f"{where}: '%' and 'ci' only apply to max-increase and max-decrease "
                          "(changes against a baseline)")
    if kind in RELATIVE_KINDS and not ci and amount < 0:
        raise ConfigError(f"{where}: the allowed change must be >= 0")
    if ci and metric not in BOOTSTRAP_METRICS:
        raise ConfigError(f"{where}: 'ci' (bootstrap interval) is available for "
                          f"{', '.join(BOOTSTRAP_METRICS)} only")
    return Rule(kind, metric, amount, relative, ci, source)


def rules_from_options(options: Mapping[str, Sequence[str] | None]) -> list[Rule]:
    """Rules from the command line: ``{"max": ["opis=0.02"], "min": [...], ...}``."""
    rules = []
    for kind in KINDS:
        for text in options.get(kind) or ():
            rules.append(parse_rule(kind, text))
    return rules


# ----------------------------------------------------------------- config


@dataclass(frozen=True)
class GateConfig:
    """Rules and settings read from a config file."""

    path: Path
    rules: tuple[Rule, ...] = ()
    baseline: Path | None = None
    confidence: float | None = None


def _read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise InputError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder; expected a .toml file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror or e}") from None


def _section(path: Path, doc: dict) -> dict | None:
    """The gate table of a config document; None if a pyproject.toml has no [tool.opis].

    ``pyproject.toml`` (or any file with a ``[tool.opis]`` table):
    ``[tool.opis.gate]``. ``opis.toml``: a ``[gate]`` table, or flat keys.
    """
    tool = doc.get("tool")
    if path.name == "pyproject.toml" or (isinstance(tool, dict) and "opis" in tool):
        if not isinstance(tool, dict) or "opis" not in tool:
            return None
        gate = tool["opis"].get("gate", {}) if isinstance(tool["opis"], dict) else None
        if not isinstance(gate, dict):
            raise ConfigError(f"{path}: [tool.opis.gate] must be a table")
        return gate
    if "gate" in doc:
        if not isinstance(doc["gate"], dict):
            raise ConfigError(f"{path}: 'gate' must be a table ([gate])")
        return doc["gate"]
    return doc


def has_opis_section(path: Path) -> bool:
    """Whether ``path`` configures opis (``opis.toml`` always; pyproject only with [tool.opis])."""
    if path.name != "pyproject.toml":
        return True
    doc = _read_toml(path)
    tool = doc.get("tool")
    return isinstance(tool, dict) and "opis" in tool


def find_config(start: str | Path | None = None) -> Path | None:
    """The config file that applies in ``start`` (default: the current folder).

    Walks up from ``start``; in each folder ``opis.toml`` wins over
    ``pyproject.toml``, and a ``pyproject.toml`` counts only when it has a
    ``[tool.opis]`` table (as ruff and pytest do). The walk stops at the
    first folder holding ``.git`` (the repository root), after looking there.
    """
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        for name in CONFIG_NAMES:
            p = folder / name
            if p.is_file() and has_opis_section(p):
                return p
        if (folder / ".git").exists():
            return None
    return None


def load_config(path: str | Path) -> GateConfig:
    """Read gate rules and settings from ``path`` (see the module docstring for the forms).

    Rule kinds are keys (``max``, ``min``, ``max-increase``, ``max-decrease``;
    ``_`` accepted for ``-``), each a table ``{metric = value}`` or a list of
    ``"metric=value"`` strings. ``baseline`` is a path relative to the config
    file's folder; ``confidence`` the bootstrap interval level.
    """
    path = Path(path)
    doc = _read_toml(path)
    gate = _section(path, doc)
    if gate is None:
        return GateConfig(path)
    src = str(path)
    rules: list[Rule] = []
    baseline = confidence = None
    for key, value in gate.items():
        kind = key.replace("_", "-")
        if kind in KINDS:
            if isinstance(value, dict):
                for metric, v in value.items():
                    rules.append(make_rule(kind, metric, v, source=src,
                                           where=f"{src}: {key}.{metric}"))
            elif isinstance(value, list):
                for item in value:
                    if not isinstance(item, str):
                        raise ConfigError(f"{src}: {key}: expected strings 'metric=value', "
                                          f"got {item!r}")
                    rules.append(parse_rule(kind, item, source=src))
            else:
                raise ConfigError(f"{src}: {key}: expected a table {{metric = value}} or a list "
                                  "of 'metric=value' strings")
        elif key == "baseline":
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{src}: baseline: expected a path string")
            baseline = (path.parent / value)
        elif key == "confidence":
            confidence = check_confidence(value, where=f"{src}: confidence")
        else:
            raise ConfigError(f"{src}: unknown gate key {key!r}; expected "
                              f"{', '.join(KINDS + CONFIG_SETTINGS)}")
    return GateConfig(path, tuple(rules), baseline, confidence)


# ----------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class Side:
    """What a gate reads from one result: its headline metrics and bootstrap."""

    name: str
    headline: Mapping[str, float]
    bootstrap: Bootstrap | None = None


@dataclass(frozen=True)
class RuleResult:
    """One rule's verdict.

    ``value`` is the candidate's metric (for ``ci`` rules: the observed change
    ``candidate - baseline``); ``limit`` the bound it was held to (``None`` for
    ``ci`` rules, whose bound is the interval); ``interval`` the difference
    interval of ``ci`` rules.
    """

    rule: Rule
    value: float
    limit: float | None
    baseline: float | None
    passed: bool
    message: str
    interval: DifferenceInterval | None = None

    def to_dict(self) -> dict:
        r = self.rule
        d = {"rule": r.text, "kind": r.kind, "metric": r.metric,
             "amount": None if r.ci else r.amount, "relative": r.relative, "ci": r.ci,
             "source": r.source, "value": json_number(self.value), "limit": json_number(self.limit),
             "baseline": json_number(self.baseline), "passed": self.passed,
             "message": self.message}
        if self.interval is not None:
            d["interval"] = self.interval.to_dict()
        return d


@dataclass(frozen=True)
class GateOutcome:
    """All verdicts; ``passed`` when every rule holds."""

    results: tuple[RuleResult, ...]
    candidate: str
    baseline: str | None = None
    warnings: tuple[str, ...] = field(default=())

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failures(self) -> int:
        return sum(not r.passed for r in self.results)

    @property
    def exit_code(self) -> ExitCode:
        """``ExitCode.OK`` when every rule holds, else ``ExitCode.GATE_FAILED``."""
        return ExitCode.OK if self.passed else ExitCode.GATE_FAILED

    def to_dict(self) -> dict:
        return {"passed": self.passed, "rules": len(self.results), "failures": self.failures,
                "candidate": self.candidate, "baseline": self.baseline,
                "warnings": list(self.warnings),
                "results": [r.to_dict() for r in self.results]}


def json_number(v) -> float | None:
    """A finite number as a float for JSON, else ``None`` (JSON has no NaN)."""
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _holds(value: float, limit: float, upper: bool) -> bool:
    slack = _SLACK * max(1.0, abs(limit))
    return value <= limit + slack if upper else value >= limit - slack


def _check(rule: Rule, cand: Side, base: Side | None, confidence: float | None) -> RuleResult:
    value = float(cand.headline[rule.metric])
    if rule.kind in ("max", "min"):
        upper = rule.kind == "max"
        limit = rule.amount
        if not math.isfinite(value):
            hint = (" (evaluate with --verification; fnmr_at_fmr needs F * M >= 1)"
                    if rule.metric in VERIFICATION_METRICS else "")
            if rule.metric in DIAGNOSIS_METRICS:
                hint = " (evaluate with --diagnose)"
            return RuleResult(rule, value, limit, None, False,
                              f"{rule.metric} is not available (not a number){hint}")
        ok = _holds(value, limit, upper)
        op = ("<=" if ok else ">") if upper else (">=" if ok else "<")
        return RuleResult(rule, value, limit, None, ok,
                          f"{rule.metric} = {num(value, '.6g')} {op} {num(limit, '.6g')}")
    assert base is not None
    bval = float(base.headline[rule.metric])
    up = rule.kind == "max-increase"
    if rule.ci:
        if cand.bootstrap is None or base.bootstrap is None:
            missing = cand.name if cand.bootstrap is None else base.name
            raise InputError(f"{missing}: rule {rule.text} needs bootstrap replicates; evaluate "
                             "the embeddings with --bootstrap N (or compare embeddings files)")
        from ..metrics.bootstrap import difference_interval

        iv = difference_interval(base.bootstrap, cand.bootstrap, rule.metric, confidence)
        change = value - bval
        ok = not (iv.lower > 0) if up else not (iv.upper < 0)
        pct = f"{100 * iv.confidence:g}%"
        what = "increase" if up else "decrease"
        msg = (f"{rule.metric} changed by {change:+.6g} ({num(bval, '.6g')} -> "
               f"{num(value, '.6g')}); {pct} {iv.method} bootstrap interval of the change "
               f"[{iv.lower:+.6g}, {iv.upper:+.6g}] "
               + (f"lies entirely above 0: a significant {what}" if not ok
                  else f"does not show a significant {what}"))
        return RuleResult(rule, change, None, bval, ok, msg, iv)
    if not (math.isfinite(value) and math.isfinite(bval)):
        return RuleResult(rule, value, None, bval, False,
                          f"{rule.metric} is not available (not a number) on "
                          f"{'the candidate' if not math.isfinite(value) else 'the baseline'}")
    delta = rule.amount * abs(bval) if rule.relative else rule.amount
    limit = bval + delta if up else bval - delta
    ok = _holds(value, limit, up)
    change = value - bval
    rel = f" ({100 * change / abs(bval):+.1f}%)" if bval != 0 else ""
    allowed = (f"{100 * rule.amount:g}%" if rule.relative else f"{rule.amount:g}")
    msg = (f"{rule.metric} {num(bval, '.6g')} -> {num(value, '.6g')}, "
           f"change {change:+.6g}{rel}; allowed {'+' if up else '-'}{allowed} "
           f"(limit {num(limit, '.6g')})")
    return RuleResult(rule, value, limit, bval, ok, msg)


def no_rules_error() -> ConfigError:
    """The error for a gate without rules (``opis gate``, ``opis compare --gate``)."""
    return ConfigError("no gate rules found: give --max/--min/--max-increase/--max-decrease "
                       "METRIC=VALUE, or a [tool.opis.gate] table in pyproject.toml "
                       "(or opis.toml)")


def baseline_needed_error(rule: Rule) -> ConfigError:
    """The error for a change rule without a baseline."""
    return ConfigError(f"rule {rule.text} compares against a baseline: give "
                       "--baseline BASE.json (or baseline = \"...\" in the config)")


def deployment_unavailable(rule: Rule, missing: str | None = None) -> InputError:
    """The error for a ``deployed_*`` rule without a deployment view."""
    why = missing or ("the deployment view (the candidate at the baseline's threshold) is "
                      "measured by opis compare only")
    return InputError(f"rule {rule.text}: {why}")


def evaluate_rules(rules: Iterable[Rule], candidate: Side, baseline: Side | None = None, *,
                   confidence: float | None = None,
                   warnings: Sequence[str] = (), missing: str | None = None) -> GateOutcome:
    """Check every rule on ``candidate`` (and ``baseline`` for change rules).

    ``deployed_*`` rules read the deployment view's metrics, which
    ``opis compare`` adds to both sides' headlines; without them (``opis gate``,
    ``opis evaluate``, or a side that cannot be measured at the threshold:
    ``missing`` says why) such a rule is an input error.

    Raises
    ------
    ConfigError
        No rules, or a change rule without a baseline.
    InputError
        A ``ci`` rule on a side without bootstrap replicates.
    """
    rules = list(rules)
    if not rules:
        raise no_rules_error()
    if baseline is None:
        need = [r for r in rules if r.needs_baseline]
        if need:
            raise baseline_needed_error(need[0])
    for r in rules:
        if r.metric in DEPLOYMENT_METRICS and r.metric not in candidate.headline:
            raise deployment_unavailable(r, missing)
        if r.metric not in candidate.headline:
            raise _unknown_metric(r.metric, r.text)
    results = tuple(_check(r, candidate, baseline, confidence) for r in rules)
    return GateOutcome(results, candidate.name, baseline.name if baseline else None,
                       tuple(warnings))
