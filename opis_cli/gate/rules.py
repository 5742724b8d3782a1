"""Release gate: rules on headline metrics, their config file, and the outcome.

No typer, no rich: the CLI (``cli_compare.py``) parses options into rules
with :func:`parse_rule`, adds the config file's rules
(:func:`find_config`, :func:`load_config`), evaluates them with
:func:`evaluate_rules` and renders the :class:`GateOutcome` (terminal table,
JSON, JUnit XML, Markdown).

Rule forms (``METRIC`` is a key of ``EvaluationResult.headline()``):

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
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from ..metrics.bootstrap import BOOTSTRAP_METRICS, Bootstrap, DifferenceInterval, difference_interval
from ..errors import ConfigError, InputError

#: The keys of ``EvaluationResult.headline()``: the metric names rules accept.
HEADLINE_METRICS = (
    "opis", "epsilon_opis", "recall_at_1", "recall_at_2", "recall_at_4", "recall_at_8",
    "map_at_r", "threshold", "mean_utility", "worst_mean_utility", "tpr", "far", "frr",
    "fraction_far_above_2x",
)

#: +1: higher is better, -1: lower is better, 0: neither (the threshold itself).
DIRECTION = {
    "opis": -1, "epsilon_opis": -1, "recall_at_1": 1, "recall_at_2": 1, "recall_at_4": 1,
    "recall_at_8": 1, "map_at_r": 1, "threshold": 0, "mean_utility": 1,
    "worst_mean_utility": 1, "tpr": 1, "far": -1, "frr": -1, "fraction_far_above_2x": -1,
}

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
    return ConfigError(f"unknown metric {metric!r} in {where}; valid names: "
                       f"{', '.join(HEADLINE_METRICS)}")


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
    if metric not in HEADLINE_METRICS:
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
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not 0 < value < 1:
                raise ConfigError(f"{src}: confidence: expected a number between 0 and 1")
            confidence = float(value)
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
             "source": r.source, "value": _json_num(self.value), "limit": _json_num(self.limit),
             "baseline": _json_num(self.baseline), "passed": self.passed,
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
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    def to_dict(self) -> dict:
        return {"passed": self.passed, "rules": len(self.results), "failures": self.failures,
                "candidate": self.candidate, "baseline": self.baseline,
                "warnings": list(self.warnings),
                "results": [r.to_dict() for r in self.results]}


def _json_num(v):
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _fmt(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "n/a"
    return f"{v:.6g}"


def _holds(value: float, limit: float, upper: bool) -> bool:
    slack = _SLACK * max(1.0, abs(limit))
    return value <= limit + slack if upper else value >= limit - slack


def _check(rule: Rule, cand: Side, base: Side | None, confidence: float | None) -> RuleResult:
    value = float(cand.headline[rule.metric])
    if rule.kind in ("max", "min"):
        upper = rule.kind == "max"
        limit = rule.amount
        if not math.isfinite(value):
            return RuleResult(rule, value, limit, None, False,
                              f"{rule.metric} is not available (not a number)")
        ok = _holds(value, limit, upper)
        op = ("<=" if ok else ">") if upper else (">=" if ok else "<")
        return RuleResult(rule, value, limit, None, ok,
                          f"{rule.metric} = {_fmt(value)} {op} {_fmt(limit)}")
    assert base is not None
    bval = float(base.headline[rule.metric])
    up = rule.kind == "max-increase"
    if rule.ci:
        if cand.bootstrap is None or base.bootstrap is None:
            missing = cand.name if cand.bootstrap is None else base.name
            raise InputError(f"{missing}: rule {rule.text} needs bootstrap replicates; evaluate "
                             "the embeddings with --bootstrap N (or compare embeddings files)")
        iv = difference_interval(base.bootstrap, cand.bootstrap, rule.metric, confidence)
        change = value - bval
        ok = not (iv.lower > 0) if up else not (iv.upper < 0)
        pct = f"{100 * iv.confidence:g}%"
        what = "increase" if up else "decrease"
        msg = (f"{rule.metric} changed by {change:+.6g} ({_fmt(bval)} -> {_fmt(value)}); "
               f"{pct} {iv.method} bootstrap interval of the change [{iv.lower:+.6g}, "
               f"{iv.upper:+.6g}] " + (f"lies entirely above 0: a significant {what}"
                                       if not ok else
                                       f"does not show a significant {what}"))
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
    msg = (f"{rule.metric} {_fmt(bval)} -> {_fmt(value)}, change {change:+.6g}{rel}; "
           f"allowed {'+' if up else '-'}{allowed} (limit {_fmt(limit)})")
    return RuleResult(rule, value, limit, bval, ok, msg)


def evaluate_rules(rules: Iterable[Rule], candidate: Side, baseline: Side | None = None, *,
                   confidence: float | None = None,
                   warnings: Sequence[str] = ()) -> GateOutcome:
    """Check every rule on ``candidate`` (and ``baseline`` for change rules).

    Raises
    ------
    ConfigError
        No rules, or a change rule without a baseline.
    InputError
        A ``ci`` rule on a side without bootstrap replicates.
    """
    rules = list(rules)
    if not rules:
        raise ConfigError("no gate rules: give --max/--min/--max-increase/--max-decrease "
                          "METRIC=VALUE, or a [tool.opis.gate] table in pyproject.toml "
                          "(or opis.toml)")
    if baseline is None:
        need = [r.text for r in rules if r.needs_baseline]
        if need:
            raise ConfigError(f"rule {need[0]} compares against a baseline: give "
                              "--baseline BASE.json (or baseline = \"...\" in the config)")
    for r in rules:
        if r.metric not in candidate.headline:
            raise _unknown_metric(r.metric, r.text)
    results = tuple(_check(r, candidate, baseline, confidence) for r in rules)
    return GateOutcome(results, candidate.name, baseline.name if baseline else None,
                       tuple(warnings))


# ----------------------------------------------------------------- renderings


def junit_xml(outcome: GateOutcome, suite: str = "opis gate") -> str:
    """JUnit XML: one ``<testcase>`` per rule, a ``<failure>`` for each failed rule."""
    n, f = len(outcome.results), outcome.failures
    root = ET.Element("testsuites", name=suite, tests=str(n), failures=str(f), errors="0")
    ts = ET.SubElement(root, "testsuite", name=suite, tests=str(n), failures=str(f),
                       errors="0", skipped="0")
    props = ET.SubElement(ts, "properties")
    ET.SubElement(props, "property", name="candidate", value=outcome.candidate)
    if outcome.baseline:
        ET.SubElement(props, "property", name="baseline", value=outcome.baseline)
    for r in outcome.results:
        tc = ET.SubElement(ts, "testcase", classname=f"opis.gate.{r.rule.metric}",
                           name=r.rule.text, time="0")
        if not r.passed:
            fail = ET.SubElement(tc, "failure", message=r.message, type="GateRuleFailed")
            fail.text = f"{r.rule.text} (from {r.rule.source}): {r.message}"
        else:
            out = ET.SubElement(tc, "system-out")
            out.text = r.message
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(outcome: GateOutcome, headline: Mapping[str, float] | None = None,
             title: str = "opis gate") -> str:
    """A Markdown summary (for ``$GITHUB_STEP_SUMMARY``): verdict, rule table, metrics."""
    n, f = len(outcome.results), outcome.failures
    verdict = (f":white_check_mark: **passed**: all {n} rules hold" if outcome.passed
               else f":x: **failed**: {f} of {n} rules broken")
    lines = [f"### {title}: {'passed' if outcome.passed else 'FAILED'}", "",
             f"{verdict} for `{_md(outcome.candidate)}`"
             + (f" against baseline `{_md(outcome.baseline)}`" if outcome.baseline else "") + ".",
             "", "| rule | value | baseline | limit | verdict |", "|---|---:|---:|---:|---|"]
    for r in outcome.results:
        limit = (f"[{r.interval.lower:+.4g}, {r.interval.upper:+.4g}]"
                 if r.interval is not None else _fmt(r.limit))
        lines.append(f"| `{_md(r.rule.text)}` | {_fmt(r.value)} | {_fmt(r.baseline)} | "
                     f"{limit} | {'pass' if r.passed else '**FAIL**'} |")
    failed = [r for r in outcome.results if not r.passed]
    if failed:
        lines += ["", "Broken rules:", ""]
        lines += [f"- `{_md(r.rule.text)}`: {_md(r.message)}" for r in failed]
    for w in outcome.warnings:
        lines += ["", f"> :warning: {_md(w)}"]
    if headline:
        lines += ["", "<details><summary>Headline metrics</summary>", "",
                  "| metric | value |", "|---|---:|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in headline.items()]
        lines += ["", "</details>"]
    return "\n".join(lines) + "\n"
