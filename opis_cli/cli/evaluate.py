"""``opis evaluate``: measure one model, optionally gate it."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .. import options as opt
from ..engines.registry import engine_help
from .firstrun import COMPILED_ENGINES, with_compile_note
from ..errors import ConfigError
from ..io.formats import path_formats
from . import options as o
from .options import ADVANCED_OPTION, ENGINE, GATE, INPUT, OUTPUTS, RANGE, TRACKERS  # noqa: F401
from .root import (app, check_inputs, check_outputs, check_report, examples, exit_with,
                   stdout_taken, write_gate_outputs, wrote)


def evaluate_path(path: Path, read, *, show_progress: bool, compile_note: bool = True,
                  **options: Any):
    """Read and evaluate one embeddings input (``read``: its ReadOptions) with a
    progress bar; show the engine's warnings (and, with ``compile_note``, that the
    kernels compile on a cold cache)."""
    from ..app import evaluate_file
    from ..render.terminal import print_warnings, progress_bar

    with progress_bar(show_progress) as cb:
        result, warnings = evaluate_file(path, read, progress=with_compile_note(cb, compile_note),
                                         **options)
    print_warnings(warnings)
    return result


def evaluate_shards(path: Path, read, *, show_progress: bool, compile_note: bool = True,
                    **options: Any):
    """``evaluate_path`` for a Parquet input that the engine's workers read: the
    client reads the role columns and the footers only (opis_cli.app.evaluate_shards)."""
    from ..app import evaluate_shards as run
    from ..render.terminal import progress_bar

    with progress_bar(show_progress) as bar:
        return run(path, read, progress=with_compile_note(bar, compile_note), **options)


def _diagnosis_options(diagnose: bool, threshold, impostors: int, overlap_level: float,
                      pairs: Optional[Path], engine: str, calibration) -> dict:
    """The --diagnose options, checked before the files are read; the keyword
    arguments of ``opis_cli.evaluate`` (none without --diagnose)."""
    from ..io.output import TABLE_SUFFIXES, check_output_path

    if not diagnose:
        given = [name for name, v, default in (("--threshold", threshold, None),
                                               ("--impostors", impostors, 5),
                                               ("--overlap-level", overlap_level, 0.5),
                                               ("--pairs", pairs, None)) if v != default]
        if given:
            raise ConfigError(f"{given[0]} belongs to the diagnosis: add --diagnose")
        return {}
    from ..engines.registry import capabilities, either, with_capability

    if not capabilities(engine).diagnosis:
        raise ConfigError(f"--diagnose needs --engine {either(with_capability('diagnosis'))} "
                          f"(the {engine} engine does not count every pair at one threshold)")
    if calibration is not None:
        raise ConfigError("--diagnose does not take --calibration (it diagnoses the raw "
                          "distances)")
    if impostors < 1:
        raise ConfigError(f"--impostors {impostors}: expected a whole number >= 1")
    if not (0.0 < overlap_level <= 1.0):
        raise ConfigError(f"--overlap-level {overlap_level:g}: expected a number in (0, 1]")
    if threshold is not None and not math.isfinite(threshold):
        raise ConfigError(f"--threshold {threshold}: expected a finite distance")
    if pairs:
        check_output_path(pairs, "--pairs", TABLE_SUFFIXES)
    return {"diagnose": True, "threshold": threshold, "impostors": impostors,
            "overlap_level": overlap_level}


@app.command(epilog=examples(
    "opis evaluate sample_data/digits_weak.parquet",
    "opis evaluate sample_data/digits_weak.parquet --report weak-report",
    "opis evaluate sample_data/digits_weak.parquet --max opis=0.02 --json -"))
@o.with_format_options
def evaluate(
    path: Annotated[Path, typer.Argument(
        help=f"Embeddings: {path_formats()} (see --format).", show_default=False)],
    labels: o.LabelsFile = None,
    embedding_column: o.EmbeddingColumn = opt.EMBEDDING_COLUMN,
    embedding_columns: o.EmbeddingColumns = None,
    label_column: o.LabelColumn = opt.LABEL_COLUMN,
    group_column: o.GroupColumn = None,
    query_column: o.QueryColumn = None,
    gallery_column: o.GalleryColumn = None,
    input_format: o.FormatOpt = None,
    format_options: dict = None,  # every format's options (o.with_format_options)
    metric: o.MetricOpt = o.Metric(opt.METRIC),
    far_range: o.FarRange = opt.range_text(opt.FAR_RANGE),
    calibration_range: o.CalRange = None,
    num_thresholds: o.NumThresholds = opt.NUM_THRESHOLDS,
    utility: o.UtilityOpt = o.Utility(opt.UTILITY),
    beta: o.Beta = opt.BETA,
    epsilon: o.Epsilon = opt.EPSILON,
    min_class_rows: o.MinClassRows = opt.MIN_CLASS_ROWS,
    threshold_policy: o.Policy = opt.THRESHOLD_POLICY,
    fairness_alpha: o.FairnessAlpha = opt.FAIRNESS_ALPHA,
    verification: o.VerificationOpt = opt.VERIFICATION,
    dcf: o.Dcf = ":".join(f"{v:g}" for v in opt.DCF),
    calibration: Annotated[Optional[Path], typer.Option(
        "--calibration", help="Apply a calibration file (opis calibrate --out; SPEC 11).",
        rich_help_panel=RANGE)] = None,
    json_out: Annotated[Optional[str], typer.Option(
        "--json", metavar="PATH", help="Write the result JSON here ('-' for stdout).",
        rich_help_panel=OUTPUTS)] = None,
    curves: Annotated[Optional[Path], typer.Option(
        help="Write per-class utility curves (a row per class and threshold), .parquet or .csv.",
        rich_help_panel=OUTPUTS)] = None,
    report: Annotated[Optional[Path], typer.Option(
        help="Write an HTML report with PNG figures into this folder.",
        rich_help_panel=OUTPUTS)] = None,
    block_mib: o.BlockMiB = opt.BLOCK_MIB,
    engine: Annotated[str, typer.Option(
        metavar="ENGINE", help=engine_help(), rich_help_panel=ENGINE)] = opt.ENGINE,
    negatives_per_query: Annotated[int, typer.Option(
        help="Gallery rows drawn per query for --engine sampled (its negatives are those of "
             "other classes).", **ADVANCED_OPTION)] = opt.NEGATIVES_PER_QUERY,
    retrieval_queries: Annotated[int, typer.Option(
        help="Queries whose R@k and MAP@R --engine sampled computes exactly against the "
             "whole gallery.", **ADVANCED_OPTION)] = opt.RETRIEVAL_QUERIES,
    k: Annotated[int, typer.Option("--k", help="Neighbours per query for --engine knn.",
        rich_help_panel=ENGINE)] = opt.K,
    index: Annotated[str, typer.Option(
        help=f"FAISS index for --engine knn: {', '.join(opt.INDEXES[:-1])} or "
             f"{opt.INDEXES[-1]}.", **ADVANCED_OPTION)] = opt.INDEX,
    scheduler: Annotated[Optional[str], typer.Option(
        help="Dask scheduler address for --engine dask (default: a local cluster).",
        **ADVANCED_OPTION)] = None,
    workers: Annotated[Optional[int], typer.Option(
        help="Worker processes of the local Dask cluster for --engine dask.",
        **ADVANCED_OPTION)] = None,
    worker_mib: Annotated[int, typer.Option(
        help="Memory budget of one Dask worker, in MiB, when the workers read a Parquet input "
             "themselves (--engine dask): it sets the block size. Results do not depend on "
             "it.", **ADVANCED_OPTION)] = opt.WORKER_MIB,
    baseline: o.Baseline = None,
    max_rules: o.MaxRules = None,
    min_rules: o.MinRules = None,
    max_increase: o.MaxIncreaseRules = None,
    max_decrease: o.MaxDecreaseRules = None,
    gate_config: o.Config = None,
    bootstrap: o.Bootstrap = None,
    seed: o.Seed = opt.SEED,
    junit: o.Junit = None,
    markdown: o.Markdown = None,
    mlflow: o.Mlflow = False,
    mlflow_experiment: o.MlflowExperiment = None,
    mlflow_run_id: o.MlflowRunId = None,
    diagnose: Annotated[bool, typer.Option(
        "--diagnose", rich_help_panel="Diagnosis",
        help="Also say why classes fail: impostor classes, overlapping pairs, duplicates, "
             "rejected rows, suspect labels (one more pass).")
    ] = False,
    threshold: Annotated[Optional[float], typer.Option(
        "--threshold", rich_help_panel="Diagnosis",
        help="Diagnose at this distance (e.g. your deployed threshold) instead of the "
             "recommended one.", show_default=False)] = None,
    impostors: Annotated[int, typer.Option(
        "--impostors", **ADVANCED_OPTION,
        help="Impostor classes listed per class.")] = 5,
    overlap_level: Annotated[float, typer.Option(
        "--overlap-level", **ADVANCED_OPTION,
        help="Two classes overlap when they accept each other's rows at least this often "
             "(and at least as often as their own genuine pairs); in (0, 1].")] = 0.5,
    pairs: Annotated[Optional[Path], typer.Option(
        "--pairs", rich_help_panel="Diagnosis",
        help="Write the class-pair table (.parquet or .csv).", show_default=False)] = None,
    quiet: o.Quiet = False,
    debug: o.Debug = False,
) -> None:
    """Measure OPIS, 10%-OPIS, a recommended threshold and retrieval accuracy.

    With gate rules (--max, --min, ...) a failing rule exits 1.
    """
    # What must fail before the files are read; the evaluation options are
    # checked by opis_cli.evaluate, the engine's by the engine.
    dcf_costs = _check_outputs_and_options(block_mib, worker_mib, fairness_alpha, min_class_rows,
                                           dcf, json_out, markdown, curves, report)
    diag_opts = _diagnosis_options(diagnose, threshold, impostors, overlap_level, pairs, engine,
                                   calibration)
    from ..gate.sides import EvaluateGate

    gate = EvaluateGate.plan(o.rule_options(max_rules, min_rules, max_increase, max_decrease),
                             baseline=baseline, config=gate_config, bootstrap=bootstrap,
                             seed=seed, junit=junit)
    check_inputs(path)  # after the rules (tests/test_gate.py)
    cal_opts = _calibration_options(calibration, engine, metric.value)
    from .trackers import log_evaluation, mlflow_target

    tracker = mlflow_target(mlflow, mlflow_experiment, mlflow_run_id)
    block_bytes = block_mib * 2**20
    read = o.read_options(labels, embedding_column, embedding_columns, label_column,
                          group_column, query_column, gallery_column, input_format,
                          format_options)
    eval_opts = dict(metric=metric.value, far_range=far_range,
                     calibration_range=calibration_range, num_thresholds=num_thresholds,
                     utility=utility.value, beta=beta, epsilon=epsilon,
                     threshold_policy=threshold_policy, fairness_alpha=fairness_alpha,
                     verification=verification, dcf=dcf_costs, block_bytes=block_bytes,
                     min_class_rows=min_class_rows, **cal_opts, **diag_opts)
    eng = _engine(engine, block_bytes=block_bytes, k=k, index=index, scheduler=scheduler,
                  workers=workers, worker_bytes=worker_mib * 2**20,
                  negatives_per_query=negatives_per_query, retrieval_queries=retrieval_queries,
                  seed=seed)
    # a missing column fails here, from the Parquet footer: before pyarrow, numpy, the
    # engine's kernels and the terminal's tables load (tests/test_startup.py)
    from ..io.dataset import check_columns

    check_columns(path, read)
    result = _run(path, read, engine, eng, quiet=quiet, **eval_opts)
    # the gate outcome sits beside the verdict, in the terminal and on the report page
    outcome = gate.apply(result, str(path))
    page = _write(result, gate, outcome, json_out=json_out, curves=curves, pairs=pairs,
                  report=report)
    wrote(json_out, curves, pairs, page, quiet=quiet)
    _show(result, path, gate, outcome, json_out=json_out, markdown=markdown, junit=junit,
          quiet=quiet)
    if tracker is not None:
        log_evaluation(tracker, result, path=path, json_text=gate.result_json(result),
                       json_out=json_out, curves=curves, report=report, outcome=outcome,
                       quiet=quiet)
    raise exit_with(outcome)


def _check_outputs_and_options(block_mib: int, worker_mib: int, fairness_alpha: float,
                               min_class_rows: int, dcf: str, json_out, markdown, curves,
                               report) -> tuple:
    """The options ``opis_cli.evaluate`` does not check itself and the output
    paths (a report folder must be writable), before any work; returns the
    parsed --dcf costs."""
    from ..io.output import TABLE_SUFFIXES, check_output_path

    opt.check("block_mib", block_mib)
    opt.check("worker_mib", worker_mib)
    opt.check("fairness_alpha", fairness_alpha)
    opt.check("min_class_rows", min_class_rows)
    dcf_costs = opt.parse_dcf(dcf)
    check_outputs((json_out, "--json"), (markdown, "--markdown"))
    if curves:
        check_output_path(curves, "--curves", TABLE_SUFFIXES)
    check_report(report)  # a writable folder: before any work
    return dcf_costs


def _calibration_options(calibration: Optional[Path], engine: str, metric: str) -> dict:
    """``opis_cli.evaluate``'s keywords of a --calibration file (none without one),
    checked against the engine's capabilities and the metric."""
    if calibration is None:
        return {}
    from ..calibration import load_calibration
    from ..engines.registry import capabilities, either, entry, with_capability

    cal, cal_source = load_calibration(calibration)
    if not capabilities(entry(engine).name).offsets:
        raise ConfigError(f"--calibration needs --engine {either(with_capability('offsets'))}"
                          f", not {engine} (the {engine} engine does not take per-row "
                          "offsets)")
    if cal.metric != metric:
        raise ConfigError(f"--calibration {calibration}: fitted with --metric {cal.metric}, "
                          f"this evaluation uses --metric {metric}")
    return {"calibration": cal, "calibration_source": cal_source}


def _engine(engine: str, **options: Any):
    """The engine to evaluate with: None for the default one, which
    ``opis_cli.evaluate`` builds once the input is read and checked (a bad column
    fails before numba and the kernels load); any other from its registry
    entry, which takes the options it declares."""
    if engine == opt.ENGINE:
        return None
    from ..engines import make_engine

    return make_engine(engine, **options)


def _run(path: Path, read, engine: str, eng, *, quiet: bool, **eval_opts: Any):
    """The evaluation (``eval_opts``: ``opis_cli.evaluate``'s keywords), with a
    progress bar on a terminal: the engine's workers read a Parquet input
    themselves where they can (not with ``diagnose``, which needs the rows in
    this process), else it is read here."""
    from ..app import reads_shards

    show = not quiet and sys.stderr.isatty()
    note = not quiet and engine in COMPILED_ENGINES
    if not eval_opts.get("diagnose") and reads_shards(path, read, engine):
        return evaluate_shards(path, read, show_progress=show, compile_note=note, engine=eng,
                               **eval_opts)
    return evaluate_path(path, read, show_progress=show, compile_note=note, engine=eng,
                         **eval_opts)


def _write(result, gate, outcome, *, json_out, curves, pairs, report):
    """The output files, staged (all or none); returns the report's page, if any."""
    from ..io.output import staged

    page = None
    with staged() as out:
        if json_out:
            out.text(json_out, gate.result_json(result))
        if curves:
            out.table(curves, result.curves_table())
        if pairs:
            out.table(pairs, result.diagnosis.pairs.columns())
        if report:
            from ..render.report import write_report

            page = write_report(result, report, gate=outcome)
    return page


def _show(result, path: Path, gate, outcome, *, json_out, markdown, junit, quiet: bool) -> None:
    """The result, diagnosis, bootstrap and gate outcome in the terminal (on
    stderr when stdout carries the JSON or Markdown), and the gate's files."""
    from ..render.terminal import (console, print_bootstrap, print_gate_outcome, print_result,
                                   results_on_stderr)

    with results_on_stderr(stdout_taken(json_out, markdown)):
        if not quiet:
            print_result(result, str(path), outcome=outcome)
            if result.diagnosis is not None:
                from ..render.terminal import print_diagnosis

                print_diagnosis(result)
            boot = gate.bootstrap(result)
            if boot is not None:
                print_bootstrap(boot)
        if outcome is not None:
            write_gate_outputs(outcome, junit=junit, quiet=quiet)
            if not quiet:
                console.print()
                print_gate_outcome(outcome)
    if markdown:  # the verdict first, then the gate's part when rules were given
        from ..gate.compare import shown_metrics

        write_gate_outputs(outcome, markdown=markdown, headline=shown_metrics(result),
                           verdict=result.verdict, quiet=quiet)
