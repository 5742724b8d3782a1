"""``opis compare`` and ``opis gate`` (and the gate options of ``opis evaluate``).

A thin layer: rules come from ``gate.py``, comparisons from ``compare.py``,
intervals from ``bootstrap.py``; this module reads the files, calls them and
renders the outcome (rich tables on stderr; JSON, JUnit XML and Markdown to
files). Exit codes: 0 every rule holds, 1 a rule fails, 2 usage or input
error.

This module imports nothing from ``cli.py`` at import time, so ``cli.py``
can import the option types below for ``opis evaluate``; the commands are
defined inside :func:`register` (which is why this module does not use
``from __future__ import annotations``: typer reads the option types there
from the function's own scope).
"""

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Optional

import typer

# ------------------------------------------------------- options shared with evaluate

_RULE_HELP = ("Metric names are the keys of the result JSON's headline: opis, epsilon_opis, "
              "recall_at_1, map_at_r, ... Repeatable.")
BaselineOpt = Annotated[Optional[Path], typer.Option(
    "--baseline", help="Baseline result JSON for --max-increase/--max-decrease (overrides "
                       "the config file's baseline).")]
MaxRules = Annotated[Optional[list[str]], typer.Option(
    "--max", metavar="METRIC=V", help="Fail when METRIC > V, e.g. --max opis=0.02. " + _RULE_HELP)]
MinRules = Annotated[Optional[list[str]], typer.Option(
    "--min", metavar="METRIC=V", help="Fail when METRIC < V, e.g. --min recall_at_1=0.9.")]
MaxIncreaseRules = Annotated[Optional[list[str]], typer.Option(
    "--max-increase", metavar="METRIC=D",
    help="Fail when METRIC rose by more than D over the baseline: D absolute (0.002), relative "
         "(10%) or 'ci' (only when the bootstrap interval of the change lies above 0; "
         "opis and epsilon_opis).")]
MaxDecreaseRules = Annotated[Optional[list[str]], typer.Option(
    "--max-decrease", metavar="METRIC=D",
    help="Fail when METRIC fell by more than D below the baseline (D as for --max-increase).")]
ConfigOpt = Annotated[Optional[Path], typer.Option(
    "--config", help="TOML file with gate rules: a tool.opis.gate table in pyproject.toml, "
                     "or opis.toml (a gate table or flat keys).")]
BootstrapOpt = Annotated[Optional[int], typer.Option(
    "--bootstrap", metavar="N",
    help="Bootstrap the evaluated classes N times (e.g. 1000) for intervals of OPIS and "
         "epsilon-OPIS; stored under 'bootstrap' in the result JSON.")]
SeedOpt = Annotated[int, typer.Option(help="Seed of the bootstrap (numpy default_rng).")]
ConfidenceOpt = Annotated[Optional[float], typer.Option(
    help="Level of the bootstrap intervals (default: 0.95, or the config's confidence).")]
JunitOpt = Annotated[Optional[Path], typer.Option(
    "--junit", help="Write the gate outcome as JUnit XML (one test case per rule).")]
MarkdownOpt = Annotated[Optional[str], typer.Option(
    "--markdown", help="Write a Markdown summary here ('-' for stdout), e.g. for "
                       "$GITHUB_STEP_SUMMARY.")]
NoConfigOpt = Annotated[bool, typer.Option(
    "--no-config", help="Do not look for opis.toml / pyproject.toml (tool.opis.gate).")]
GateFlag = Annotated[bool, typer.Option(
    "--gate", help="Also apply the rules of the config file found from the current folder "
                   "(opis.toml, or pyproject.toml with a tool.opis.gate table).")]


# ------------------------------------------------------- reading results


@dataclass(frozen=True)
class Loaded:
    """One side: a result (in-process or read from JSON), its curves and bootstrap."""

    name: str
    result: object
    bootstrap: object | None = None
    curves: object | None = None


def load_result(path, curves: Path | None = None) -> Loaded:
    """Read a result JSON (``opis evaluate --json``), its stored bootstrap and,
    when ``curves`` is given, its per-class curves table (``--curves``)."""
    from ..metrics.bootstrap import Bootstrap
    from ..io import read_curves, read_result
    from ..render.report import curves_from_table

    result = read_result(path)
    # read_result validated the document; the optional bootstrap block is ours to read.
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    boot = doc.get("bootstrap")
    boot = Bootstrap.from_dict(boot, f"{path}: bootstrap") if boot else None
    cv = None
    if curves is not None:
        cv = curves_from_table(read_curves(curves), result, level="class", source=str(curves))
    return Loaded(str(path), result, boot, cv)


def evaluated(name: str, result) -> Loaded:
    """An in-process result (its curves come with it)."""
    return Loaded(name, result, None, result.curves)


def _is_json(path: Path) -> bool:
    return Path(path).suffix.lower() == ".json"


# ------------------------------------------------------- rules and rendering


def collect_rules(*, max_rules, min_rules, max_increase, max_decrease, config: Path | None,
                  discover: bool):
    """CLI rules plus the config file's (explicit ``config``, or found when ``discover``)."""
    from ..gate.rules import find_config, load_config, rules_from_options

    cli_rules = rules_from_options({"max": max_rules, "min": min_rules,
                                    "max-increase": max_increase,
                                    "max-decrease": max_decrease})
    cfg = None
    if config is not None:
        cfg = load_config(config)
    elif discover:
        found = find_config()
        cfg = load_config(found) if found else None
    return (list(cfg.rules) if cfg else []) + cli_rules, cfg


def _needs_bootstrap(rules) -> bool:
    return any(r.ci for r in rules)


def _fmt(v, spec: str = ".4g") -> str:
    if v is None or v != v:
        return "n/a"
    return format(v, spec)


def print_outcome(outcome) -> None:
    """The rule table and the verdict, on stderr."""
    from rich.table import Table
    from rich.text import Text

    from ..render.terminal import console

    with_base = any(r.baseline is not None for r in outcome.results)
    with_src = any(r.rule.source != "command line" for r in outcome.results)
    t = Table(title="Gate", title_justify="left")
    t.add_column("rule", no_wrap=True)
    t.add_column("value", justify="right")
    if with_base:
        t.add_column("baseline", justify="right")
    t.add_column("limit", justify="right")
    t.add_column("verdict")
    if with_src:
        t.add_column("from")
    for r in outcome.results:
        if r.interval is not None:
            limit = f"[{r.interval.lower:+.3g}, {r.interval.upper:+.3g}]"
            value = f"{r.value:+.4g}"
        else:
            limit, value = _fmt(r.limit), _fmt(r.value)
        row = [Text(r.rule.text), value] + ([_fmt(r.baseline)] if with_base else []) + [
            limit, Text("PASS", style="green") if r.passed else Text("FAIL", style="bold red")]
        if with_src:
            row.append(Text("option" if r.rule.source == "command line"
                            else Path(r.rule.source).name))
        t.add_row(*row)
    console.print(t)
    if any(r.interval is not None for r in outcome.results):
        console.print("ci rules: value = candidate - baseline; limit = its bootstrap interval, "
                      "which fails an increase rule when it lies entirely above 0 (a decrease "
                      "rule: below 0).", style="dim")
    for w in outcome.warnings:
        console.print(Text(f"Warning: {w}", style="yellow"))
    n, f = len(outcome.results), outcome.failures
    if outcome.passed:
        console.print(Text(f"Gate passed: all {n} rules hold.", style="bold green"))
    else:
        console.print(Text(f"Gate FAILED: {f} of {n} rules broken.", style="bold red"))
        for r in outcome.results:
            if not r.passed:
                console.print(Text(f"  {r.rule.text}: {r.message}"))


def check_outputs(json_out=None, junit=None, markdown=None) -> None:
    """Fail before any work when an output file cannot be written."""
    from ..io.output import check_output_path

    for path, option in ((json_out, "--json"), (junit, "--junit"), (markdown, "--markdown")):
        if path:
            check_output_path(path, option)


def write_gate_outputs(outcome, *, json_out: str | None = None, junit: Path | None = None,
                       markdown: str | None = None, headline=None, extra: dict | None = None,
                       markdown_extra: str = "") -> None:
    """Write the requested outputs together (all or none, see ``output.staged``).

    ``--json`` holds ``outcome.to_dict()``, or ``extra`` plus a ``"gate"`` key
    when ``extra`` is given (compare).
    """
    from ..gate import rules as gate
    from ..io.output import staged

    with staged() as out:
        if json_out:
            if extra is None:
                doc = outcome.to_dict()
            else:
                doc = dict(extra)
                doc["gate"] = outcome.to_dict() if outcome is not None else None
            out.text(json_out, json.dumps(doc, indent=2, allow_nan=False) + "\n")
        if junit and outcome is not None:
            out.text(junit, gate.junit_xml(outcome))
        if markdown:
            parts = ([gate.markdown(outcome, headline)] if outcome is not None else []) + (
                [markdown_extra] if markdown_extra else [])
            out.text(markdown, "\n".join(parts))


def _side(loaded: Loaded | None):
    from ..gate.rules import Side

    if loaded is None:
        return None
    return Side(loaded.name, loaded.result.headline(), loaded.bootstrap)


def _with_bootstrap(loaded: Loaded, *, partner=None, resamples: int | None, seed: int,
                    confidence: float | None) -> Loaded:
    """``loaded`` with a bootstrap computed from its curves, when it has curves.

    When ``partner`` (the other side's bootstrap) exists its ``resamples``
    and ``seed`` are used, so that both sides are resampled identically
    (paired); a stored bootstrap that already pairs is kept.
    """
    from dataclasses import replace

    from ..metrics.bootstrap import DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES, bootstrap_curves

    if loaded.curves is None:
        return loaded
    if partner is not None:
        if loaded.bootstrap is not None and loaded.bootstrap.pairs_with(partner):
            return loaded
        b, s, c = partner.resamples, partner.seed, partner.confidence
    elif loaded.bootstrap is not None:
        return loaded
    else:
        b, s = resamples or DEFAULT_RESAMPLES, seed
        c = confidence or DEFAULT_CONFIDENCE
    cv, res = loaded.curves, loaded.result
    return replace(loaded, bootstrap=bootstrap_curves(cv.utility, res.thresholds, cv.labels,
                                                      res.epsilon, resamples=b, seed=s,
                                                      confidence=c))


def _pair_bootstraps(base: Loaded, cand: Loaded, *, resamples, seed, confidence):
    """Both sides with bootstraps where curves allow, paired when possible."""
    partner = base.bootstrap or cand.bootstrap
    base = _with_bootstrap(base, partner=partner, resamples=resamples, seed=seed,
                           confidence=confidence)
    cand = _with_bootstrap(cand, partner=base.bootstrap, resamples=resamples, seed=seed,
                           confidence=confidence)
    return base, cand


# ------------------------------------------------------- opis evaluate's gate


@dataclass
class EvaluateGate:
    """The gate options of ``opis evaluate``: checked before the evaluation runs
    (:meth:`plan`), applied to the fresh result afterwards (:meth:`finish`)."""

    rules: list = field(default_factory=list)
    baseline: Loaded | None = None
    confidence: float | None = None
    bootstrap_n: int | None = None
    seed: int = 0
    junit: Path | None = None
    _boot: object | None = None

    @classmethod
    def plan(cls, *, baseline: Path | None = None, max_rules=None, min_rules=None,
             max_increase=None, max_decrease=None, config: Path | None = None,
             bootstrap: int | None = None, seed: int = 0, junit: Path | None = None,
             confidence: float | None = None) -> "EvaluateGate":
        from ..metrics.bootstrap import check_confidence
        from ..errors import ConfigError

        if bootstrap is not None and bootstrap < 2:
            raise ConfigError(f"--bootstrap must be at least 2 resamples, got {bootstrap}")
        if confidence is not None:
            check_confidence(confidence)
        rules, cfg = collect_rules(max_rules=max_rules, min_rules=min_rules,
                                   max_increase=max_increase, max_decrease=max_decrease,
                                   config=config, discover=False)
        if config is not None and not rules:
            raise ConfigError(f"{config}: no gate rules in this file")
        base_path = baseline or (cfg.baseline if cfg else None)
        if rules and any(r.needs_baseline for r in rules) and base_path is None:
            need = next(r for r in rules if r.needs_baseline)
            raise ConfigError(f"rule {need.text} compares against a baseline: give "
                              "--baseline BASE.json")
        if junit is not None and not rules:
            raise ConfigError("--junit needs gate rules (--max, --min, --max-increase, "
                              "--max-decrease or --config)")
        check_outputs(junit=junit)
        base = load_result(base_path) if (base_path is not None and rules) else None
        if base is not None and _needs_bootstrap(rules) and base.bootstrap is None:
            raise ConfigError(f"{base.name}: the 'ci' rules need the baseline's bootstrap; "
                              "evaluate the baseline with --bootstrap N")
        return cls(rules, base, confidence or (cfg.confidence if cfg else None), bootstrap,
                   seed, junit)

    def stored_bootstrap(self, result):
        """The bootstrap asked for with ``--bootstrap N`` (computed once), or None."""
        from ..metrics.bootstrap import DEFAULT_CONFIDENCE, bootstrap_result

        if self.bootstrap_n and self._boot is None:
            self._boot = bootstrap_result(result, resamples=self.bootstrap_n, seed=self.seed,
                                          confidence=self.confidence or DEFAULT_CONFIDENCE)
        return self._boot

    def result_json(self, result) -> str:
        """The result JSON, with the ``bootstrap`` key when ``--bootstrap N`` was given."""
        from ..metrics.bootstrap import result_document

        boot = self.stored_bootstrap(result)
        if boot is None:
            return result.to_json()
        return json.dumps(result_document(result, boot), indent=2, allow_nan=False) + "\n"

    def finish(self, result, source: str = "", quiet: bool = False) -> int:
        """Print the bootstrap intervals, apply the rules; the exit code."""
        from ..gate.compare import comparability_warnings
        from ..gate.rules import evaluate_rules
        from ..render.terminal import console

        boot = self.stored_bootstrap(result)
        if boot is not None and not quiet:
            _print_intervals(boot)
        if not self.rules:
            return 0
        cand = Loaded(source or "result", result, boot, result.curves)
        if _needs_bootstrap(self.rules):
            cand = _with_bootstrap(cand, partner=self.baseline.bootstrap if self.baseline
                                   else None, resamples=self.bootstrap_n, seed=self.seed,
                                   confidence=self.confidence)
        warnings = (comparability_warnings(self.baseline.result, result)
                    if self.baseline else [])
        outcome = evaluate_rules(self.rules, _side(cand), _side(self.baseline),
                                 confidence=self.confidence, warnings=warnings)
        write_gate_outputs(outcome, junit=self.junit)
        if not quiet:
            console.print()
            print_outcome(outcome)
        return outcome.exit_code


def _print_intervals(boot) -> None:
    from ..render.terminal import console

    pct = f"{100 * boot.confidence:g}%"
    parts = []
    for m, name in (("opis", "OPIS"), ("epsilon_opis", "epsilon-OPIS")):
        lo, hi = boot.interval(m)
        parts.append(f"{name} {boot.estimate[m]:.5f} [{lo:.5f}, {hi:.5f}]")
    console.print(f"[bold]Bootstrap over classes[/bold] ({boot.resamples} resamples of "
                  f"{boot.classes} classes, seed {boot.seed}, {pct} percentile intervals): "
                  + ";  ".join(parts))


# ------------------------------------------------------- compare helpers


def _print_comparison(cmp, top: int) -> None:
    from rich.table import Table
    from rich.text import Text

    from ..render.terminal import console

    console.print(Text.assemble(("opis compare", "bold"),
                                f": baseline {cmp.baseline}  vs  candidate {cmp.candidate}  ("
                                + ("same thresholds" if cmp.same_thresholds
                                   else "different thresholds") + ")"))
    for w in cmp.warnings:
        console.print(Text(f"Warning: {w}", style="yellow"))
    t = Table(title="Headline metrics", title_justify="left")
    t.add_column("metric", no_wrap=True)
    for col in ("baseline", "candidate", "change", "relative"):
        t.add_column(col, justify="right", no_wrap=True)
    t.add_column("")
    style = {"better": "green", "worse": "red", "same": "dim", "": ""}
    for m in cmp.metrics:
        t.add_row(m.name, _fmt(m.baseline), _fmt(m.candidate), _fmt(m.change, "+.3g"),
                  "n/a" if m.relative is None else f"{100 * m.relative:+.1f}%",
                  Text(m.verdict, style=style.get(m.verdict, "")))
    console.print(t)
    for iv in cmp.intervals:
        console.print(f"{iv.metric}: change {iv.estimate:+.4g}, {100 * iv.confidence:g}% "
                      f"{iv.method} bootstrap interval [{iv.lower:+.4g}, {iv.upper:+.4g}]")
    for title, rows in (("Classes that got most worse", cmp.most_worse(top)),
                        ("Classes that got most better", cmp.most_better(top))):
        if not rows:
            console.print(f"[bold]{title}[/bold]: none")
            continue
        c = Table(title=f"{title} (mean utility; FAR / FRR at each model's threshold)",
                  title_justify="left")
        for col in ("class", "mean utility", "change", "FAR", "FRR"):
            c.add_column(col, justify="left" if col == "class" else "right")
        for r in rows:
            c.add_row(Text(r.label), f"{r.baseline_mean_utility:.4f} -> "
                      f"{r.candidate_mean_utility:.4f}", f"{r.change:+.4f}",
                      f"{100 * r.baseline_far:.2f}% -> {100 * r.candidate_far:.2f}%",
                      f"{100 * r.baseline_frr:.2f}% -> {100 * r.candidate_frr:.2f}%")
        console.print(c)
    if cmp.only_baseline or cmp.only_candidate:
        console.print(Text(f"Classes only in the baseline: {', '.join(cmp.only_baseline) or '-'}; "
                           f"only in the candidate: {', '.join(cmp.only_candidate) or '-'}"))


def _options_from(result) -> dict:
    """Evaluation options a result JSON was measured with (to evaluate the other side alike)."""
    opts = result.options or {}
    out = {"metric": result.metric, "utility": result.utility, "beta": result.beta,
           "epsilon": result.epsilon,
           "threshold_policy": opts.get("threshold_policy",
                                        result.recommended_threshold.policy)}
    if opts.get("far_range"):
        out["far_range"] = tuple(opts["far_range"])
    return out


# ------------------------------------------------------- commands


def register(app) -> None:
    """Add the compare and gate commands to ``app``."""
    from . import root as c

    @app.command("gate")
    def gate_cmd(
        result: Annotated[Path, typer.Argument(help="Result JSON written by opis evaluate --json.",
                                               show_default=False)],
        baseline: BaselineOpt = None,
        max_rules: MaxRules = None,
        min_rules: MinRules = None,
        max_increase: MaxIncreaseRules = None,
        max_decrease: MaxDecreaseRules = None,
        config: ConfigOpt = None,
        no_config: NoConfigOpt = False,
        curves: Annotated[Optional[Path], typer.Option(
            help="Per-class curves of RESULT (opis evaluate --curves), for 'ci' rules when "
                 "RESULT holds no bootstrap.")] = None,
        baseline_curves: Annotated[Optional[Path], typer.Option(
            help="Per-class curves of the baseline, likewise.")] = None,
        bootstrap: Annotated[Optional[int], typer.Option(
            "--bootstrap", metavar="N", help="Resamples when a bootstrap is computed from "
                                             "curves (default: the other side's, else 1000).")
        ] = None,
        seed: SeedOpt = 0,
        confidence: ConfidenceOpt = None,
        json_out: Annotated[Optional[str], typer.Option(
            "--json", help="Write the gate outcome as JSON here ('-' for stdout).")] = None,
        junit: JunitOpt = None,
        markdown: MarkdownOpt = None,
        quiet: Annotated[bool, typer.Option("--quiet", "-q",
                                            help="No terminal output but errors.")] = False,
        debug: Annotated[bool, typer.Option(help="Show tracebacks for errors.")] = False,
    ) -> None:
        """Check a result against release rules: exit 0 when all hold, 1 when one fails.

        Rules come from options and from the config file (a tool.opis.gate table
        in pyproject.toml, or opis.toml) found by walking up from the current folder.
        """
        from ..metrics.bootstrap import check_confidence
        from ..gate.compare import comparability_warnings
        from ..gate.rules import evaluate_rules

        if confidence is not None:
            check_confidence(confidence)
        check_outputs(json_out, junit, markdown)
        rules, cfg = collect_rules(max_rules=max_rules, min_rules=min_rules,
                                   max_increase=max_increase, max_decrease=max_decrease,
                                   config=config, discover=not no_config)
        cand = load_result(result, curves)
        base_path = baseline or (cfg.baseline if cfg else None)
        base = None
        if base_path is not None and (baseline is not None
                                      or any(r.needs_baseline for r in rules)):
            base = load_result(base_path, baseline_curves)
        if base is not None and _needs_bootstrap(rules):
            base, cand = _pair_bootstraps(base, cand, resamples=bootstrap, seed=seed,
                                          confidence=confidence)
        warnings = comparability_warnings(base.result, cand.result) if base else []
        outcome = evaluate_rules(rules, _side(cand), _side(base),
                                 confidence=confidence or (cfg.confidence if cfg else None),
                                 warnings=warnings)
        write_gate_outputs(outcome, json_out=json_out, junit=junit, markdown=markdown,
                           headline=cand.result.headline())
        if not quiet:
            print_outcome(outcome)
        raise typer.Exit(outcome.exit_code)

    @app.command("compare")
    def compare_cmd(
        baseline: Annotated[Path, typer.Argument(
            help="Baseline: a result JSON or an embeddings file.", show_default=False)],
        candidate: Annotated[Path, typer.Argument(
            help="Candidate: a result JSON or an embeddings file.", show_default=False)],
        labels: c.LabelsFile = None,
        embedding_column: c.EmbeddingColumn = "embedding",
        embedding_columns: c.EmbeddingColumns = None,
        label_column: c.LabelColumn = "label",
        query_column: c.QueryColumn = None,
        gallery_column: c.GalleryColumn = None,
        metric: Annotated[Optional[c.Metric], typer.Option(
            help="Distance for embeddings sides (default: the result JSON side's, else "
                 "cosine).")] = None,
        far_range: Annotated[Optional[str], typer.Option(
            help="Calibration range as global FAR bounds A:B, for the side(s) evaluated on "
                 "their own range (default: 0.01:0.1).")] = None,
        calibration_range: c.CalRange = None,
        num_thresholds: Annotated[Optional[int], typer.Option(
            help="Thresholds in the grid (default: the baseline's, else 101).")] = None,
        utility: Annotated[Optional[c.Utility], typer.Option(
            help="Per-class utility (default: the result JSON side's, else tpr-tnr).")] = None,
        beta: Annotated[Optional[float], typer.Option(
            help="F-beta weight (default: the result JSON side's, else 1).")] = None,
        epsilon: Annotated[Optional[float], typer.Option(
            help="Fraction of worst classes (default: the result JSON side's, else 0.1).")
        ] = None,
        threshold_policy: Annotated[Optional[str], typer.Option(
            help="Recommended threshold policy (default: the result JSON side's, else "
                 "max-mean-utility).")] = None,
        own_range: Annotated[bool, typer.Option(
            "--own-range", help="Evaluate each embeddings side on its own calibration range "
                                "(default: on the baseline's, so both use the same "
                                "thresholds).")] = False,
        block_mib: c.BlockMiB = 64,
        top: Annotated[int, typer.Option(help="Classes shown as most worse / most better.")] = 5,
        bootstrap: Annotated[Optional[int], typer.Option(
            "--bootstrap", metavar="N",
            help="Bootstrap the classes of each embeddings side N times for intervals of the "
                 "OPIS and epsilon-OPIS changes (a result JSON uses its stored bootstrap, whose "
                 "N and seed then apply to both sides).")] = None,
        seed: SeedOpt = 0,
        confidence: ConfidenceOpt = None,
        max_rules: MaxRules = None,
        min_rules: MinRules = None,
        max_increase: MaxIncreaseRules = None,
        max_decrease: MaxDecreaseRules = None,
        config: ConfigOpt = None,
        gate: GateFlag = False,
        report: Annotated[Optional[Path], typer.Option(
            help="Write an HTML report with before/after figures into this folder.")] = None,
        json_out: Annotated[Optional[str], typer.Option(
            "--json", help="Write the comparison (and gate outcome) as JSON ('-' for stdout).")
        ] = None,
        junit: JunitOpt = None,
        markdown: MarkdownOpt = None,
        quiet: Annotated[bool, typer.Option("--quiet", "-q",
                                            help="No terminal output but errors.")] = False,
        debug: Annotated[bool, typer.Option(help="Show tracebacks for errors.")] = False,
    ) -> None:
        """Compare two models: headline deltas, the classes that changed most, and gate rules.

        Each side is a result JSON or an embeddings file. An embeddings side is
        evaluated with the same options and, unless --own-range, on the
        baseline's calibration range (the candidate JSON's, when only the
        baseline is an embeddings file), so both are measured on the same
        thresholds. Rules (--max ..., --config, --gate) are applied to the
        candidate with the baseline as reference: exit 1 when one fails.
        """
        from ..metrics.bootstrap import check_confidence
        from ..gate.compare import compare_results, markdown as compare_markdown
        from ..errors import ConfigError
        from ..gate.rules import evaluate_rules

        if confidence is not None:
            check_confidence(confidence)
        if bootstrap is not None and bootstrap < 2:
            raise ConfigError(f"--bootstrap must be at least 2 resamples, got {bootstrap}")
        if top < 0:
            raise ConfigError(f"--top must be >= 0, got {top}")
        check_outputs(json_out, junit, markdown)
        if report is not None and report.exists() and not report.is_dir():
            raise ConfigError(f"--report {report}: exists and is not a folder")
        gating = bool(max_rules or min_rules or max_increase or max_decrease or config or gate)
        rules, cfg = collect_rules(max_rules=max_rules, min_rules=min_rules,
                                   max_increase=max_increase, max_decrease=max_decrease,
                                   config=config, discover=gate)
        if gating and not rules:
            raise ConfigError("no gate rules found: give --max/--min/--max-increase/"
                              "--max-decrease, or a [tool.opis.gate] table "
                              "(pyproject.toml) / opis.toml")
        if (junit is not None) and not gating:
            raise ConfigError("--junit needs gate rules (--max, --min, --max-increase, "
                              "--max-decrease, --config or --gate)")
        conf = confidence or (cfg.confidence if cfg else None)

        base = load_result(baseline) if _is_json(baseline) else None
        cand = load_result(candidate) if _is_json(candidate) else None
        reference = base or cand
        opts = {"metric": "cosine", "utility": "tpr-tnr", "beta": 1.0, "epsilon": 0.1,
                "threshold_policy": "max-mean-utility", "far_range": "0.01:0.1"}
        if reference is not None:
            opts.update(_options_from(reference.result))
        given = {"metric": metric.value if metric else None,
                 "utility": utility.value if utility else None, "beta": beta,
                 "epsilon": epsilon, "threshold_policy": threshold_policy,
                 "far_range": far_range}
        opts.update({k: v for k, v in given.items() if v is not None})
        show = not quiet and sys.stderr.isatty()

        def run(path: Path, cal, k: int | None) -> Loaded:
            res = c.load_and_evaluate(
                path, labels=labels, embedding_column=embedding_column,
                embedding_columns=embedding_columns, label_column=label_column,
                group_column=None, query_column=query_column, gallery_column=gallery_column,
                show_progress=show, calibration_range=cal,
                num_thresholds=k or num_thresholds or 101, block_bytes=block_mib * 2**20,
                **opts)
            return evaluated(str(path), res)

        if base is None:
            cal = calibration_range
            k = num_thresholds
            if cal is None and not own_range and cand is not None:
                cr = cand.result.calibration_range
                cal, k = (cr.lower, cr.upper), k or len(cand.result.thresholds)
            base = run(baseline, cal, k)
        if cand is None:
            cal = calibration_range
            k = num_thresholds
            if cal is None and not own_range:
                cr = base.result.calibration_range
                cal, k = (cr.lower, cr.upper), k or len(base.result.thresholds)
            cand = run(candidate, cal, k)

        if bootstrap is not None or _needs_bootstrap(rules):
            # A stored bootstrap decides B and seed so that both sides pair.
            base, cand = _pair_bootstraps(base, cand, resamples=bootstrap, seed=seed,
                                          confidence=conf)
        cmp = compare_results(base.result, cand.result, baseline_name=base.name,
                              candidate_name=cand.name, base_bootstrap=base.bootstrap,
                              cand_bootstrap=cand.bootstrap, confidence=conf)
        outcome = None
        if gating:
            # The comparison carries the warnings (printed, in JSON and Markdown once).
            outcome = evaluate_rules(rules, _side(cand), _side(base), confidence=conf)
        if report is not None:
            from ..render.report.compare import write_comparison_report

            write_comparison_report(cmp, base.result, cand.result, report, outcome=outcome)
        write_gate_outputs(outcome, json_out=json_out, junit=junit, markdown=markdown,
                           headline=None, extra={"comparison": cmp.to_dict()},
                           markdown_extra=compare_markdown(cmp, top))
        if not quiet:
            _print_comparison(cmp, top)
            if outcome is not None:
                print_outcome(outcome)
        raise typer.Exit(outcome.exit_code if outcome is not None else 0)
