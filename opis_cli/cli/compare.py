"""``opis compare``: two models side by side, optionally gated."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import options as opt
from . import options as o
from .options import ADVANCED_OPTION, ENGINE, GATE, INPUT, OUTPUTS, RANGE, TRACKERS  # noqa: F401
from .evaluate import evaluate_path
from .root import (app, check_inputs, check_outputs, check_report, examples, exit_with,
                   stdout_taken, write_gate_outputs, wrote)


@app.command(epilog=examples(
    "opis compare weak.json sample_data/digits_strong.parquet",
    "opis compare weak.json strong.json --max-increase opis=10%",
    "opis compare weak.json strong.json --gate --json -"))
@o.with_format_options
def compare(
    baseline: Annotated[Path, typer.Argument(
        help="Baseline: a result JSON or an embeddings file.", show_default=False)],
    candidate: Annotated[Path, typer.Argument(
        help="Candidate: a result JSON or an embeddings file.", show_default=False)],
    labels: o.LabelsFile = None,
    embedding_column: o.EmbeddingColumn = opt.EMBEDDING_COLUMN,
    embedding_columns: o.EmbeddingColumns = None,
    label_column: o.LabelColumn = opt.LABEL_COLUMN,
    query_column: o.QueryColumn = None,
    gallery_column: o.GalleryColumn = None,
    input_format: o.FormatOpt = None,
    format_options: dict = None,  # every format's options (o.with_format_options)
    metric: o.MetricOrSide = None,
    far_range: o.FarRangeOrDefault = None,
    calibration_range: o.CalRange = None,
    num_thresholds: o.NumThresholdsOrSide = None,
    utility: o.UtilityOrSide = None,
    beta: o.BetaOrSide = None,
    epsilon: o.EpsilonOrSide = None,
    threshold_policy: o.PolicyOrSide = None,
    same_thresholds: Annotated[bool, typer.Option(
        "--same-thresholds", help="Evaluate the candidate on the baseline's calibration range "
                                  "and thresholds (a retrained model that must keep the same "
                                  "threshold). Default: each embeddings side on its own range "
                                  "from the same --far-range.", rich_help_panel=RANGE)] = False,
    own_range: Annotated[bool, typer.Option(
        "--own-range",
        help="Deprecated, no effect: each side on its own range is the default now.",
        **ADVANCED_OPTION)] = False,
    threshold: Annotated[Optional[float], typer.Option(
        "--threshold", help="The distance threshold you deploy, for the deployment view and "
                            "the deployed_* gate metrics (default: the baseline's recommended "
                            "threshold).", show_default=False, rich_help_panel=RANGE)] = None,
    baseline_curves: Annotated[Optional[Path], typer.Option(
        help="Per-class curves of a baseline result JSON (opis evaluate --curves): bootstrap "
             "intervals, and the deployment view at a --threshold on its grid.",
             rich_help_panel=INPUT)] = None,
    candidate_curves: Annotated[Optional[Path], typer.Option(
        help="Per-class curves of a candidate result JSON, likewise (the deployment view "
             "needs them, or the candidate's embeddings).", rich_help_panel=INPUT)] = None,
    block_mib: o.BlockMiB = opt.BLOCK_MIB,
    top: Annotated[int, typer.Option(
        help="Classes shown as most worse / most better.", rich_help_panel=OUTPUTS)] = opt.TOP,
    bootstrap: o.Bootstrap = None,
    seed: o.Seed = opt.SEED,
    confidence: o.Confidence = None,
    max_rules: o.MaxRules = None,
    min_rules: o.MinRules = None,
    max_increase: o.MaxIncreaseRules = None,
    max_decrease: o.MaxDecreaseRules = None,
    config: o.Config = None,
    gate: Annotated[bool, typer.Option(
        "--gate", help="Also apply the rules of the config file found from the current folder "
                       "(opis.toml, or pyproject.toml with a tool.opis.gate table).",
                       rich_help_panel=GATE)] = False,
    report: Annotated[Optional[Path], typer.Option(
        help="Write an HTML report with before/after figures into this folder.",
        rich_help_panel=OUTPUTS)] = None,
    json_out: Annotated[Optional[str], typer.Option(
        "--json", metavar="PATH",
        help="Write the comparison (and gate outcome) as JSON ('-' for stdout).",
        rich_help_panel=OUTPUTS)
    ] = None,
    junit: o.Junit = None,
    markdown: o.Markdown = None,
    mlflow: o.Mlflow = False,
    mlflow_experiment: o.MlflowExperiment = None,
    mlflow_run_id: o.MlflowRunId = None,
    quiet: o.Quiet = False,
    debug: o.Debug = False,
) -> None:
    """Compare two models: headline deltas, the classes that changed most, and gate rules.

    Each side is a result JSON or an embeddings file. An embeddings side is
    evaluated with the same options, on its own calibration range from the
    same --far-range (with --same-thresholds: on the baseline's range and
    thresholds). The deployment view shows both models at the baseline's
    recommended threshold (or --threshold). Rules (--max ..., --config,
    --gate; deployed_far, deployed_tpr, deployed_frr, deployed_far_ratio
    included) are applied to the candidate with the baseline as reference:
    exit 1 when one fails.
    """
    # What must fail before the files are read (the evaluation options are
    # checked by opis_cli.evaluate).
    opt.validate(confidence=confidence, bootstrap=bootstrap, top=top, block_mib=block_mib)
    check_outputs((json_out, "--json"), (junit, "--junit"), (markdown, "--markdown"))
    check_inputs(baseline, candidate)
    # the heavy imports (numpy, rich) only once the files are known to exist
    from ..app import compare_sides, evaluated, measure_file
    from ..gate.sides import compare_rules, run_compare
    from ..render.terminal import print_comparison, print_gate_outcome, results_on_stderr

    check_report(report)  # a writable folder: before any work
    from .trackers import log_comparison, mlflow_target

    tracker = mlflow_target(mlflow, mlflow_experiment, mlflow_run_id)
    rules, cfg, gating = compare_rules(
        o.rule_options(max_rules, min_rules, max_increase, max_decrease), config=config,
        discover=gate, junit=junit)

    read = o.read_options(labels, embedding_column, embedding_columns, label_column, None,
                          query_column, gallery_column, input_format, format_options)
    show = not quiet and sys.stderr.isatty()

    def evaluate_side(path: Path, options: dict):
        result = evaluate_path(path, read, show_progress=show, compile_note=not quiet,
                               block_bytes=block_mib * 2**20, **options)
        return evaluated(str(path), result,
                         at=lambda t: measure_file(path, t, read, options=options,
                                                   block_bytes=block_mib * 2**20))

    given = {"metric": metric.value if metric else None,
             "utility": utility.value if utility else None, "beta": beta, "epsilon": epsilon,
             "threshold_policy": threshold_policy, "far_range": far_range}
    base, cand = compare_sides(baseline, candidate, evaluate_side, given=given,
                               calibration_range=calibration_range,
                               num_thresholds=num_thresholds, same_thresholds=same_thresholds,
                               base_curves=baseline_curves, cand_curves=candidate_curves)
    mode = "same-thresholds" if same_thresholds or calibration_range else "own-range"
    cmp, outcome, base, cand = run_compare(base, cand, rules=rules, gating=gating, cfg=cfg,
                                           resamples=bootstrap, seed=seed,
                                           confidence=confidence, mode=mode,
                                           threshold=threshold)
    if report is not None:
        from ..render.report.compare import write_comparison_report

        wrote(write_comparison_report(cmp, base.result, cand.result, report, outcome=outcome,
                                      base_curves=base.curves, cand_curves=cand.curves),
              quiet=quiet)
    write_gate_outputs(outcome, json_out=json_out, junit=junit, markdown=markdown,
                       comparison=cmp, top=top, json_doc={"comparison": cmp.to_dict()},
                       quiet=quiet)
    if not quiet:
        with results_on_stderr(stdout_taken(json_out, markdown)):
            print_comparison(cmp, top)
            if outcome is not None:
                print_gate_outcome(outcome)
    if tracker is not None:
        log_comparison(tracker, cmp, base.result, cand.result, baseline=baseline,
                       candidate=candidate, json_out=json_out, report=report, outcome=outcome,
                       quiet=quiet, curves=(base.curves, cand.curves))
    raise exit_with(outcome)
