"""``opis evaluate``: measure one model, optionally gate it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .. import options as opt
from ..errors import ConfigError
from . import options as o
from .root import app, check_outputs, exit_with, write_gate_outputs


def evaluate_path(path: Path, reader, *, show_progress: bool, **options: Any):
    """Read and evaluate one embeddings file with a progress bar; show the engine's warnings."""
    from ..gate.sides import evaluate_file
    from ..render.terminal import print_warnings, progress_bar

    with progress_bar(show_progress) as cb:
        result, warnings = evaluate_file(path, reader, progress=cb, **options)
    print_warnings(warnings)
    return result


def _worker_shards(path: Path, engine: str, labels, embedding_columns, input_format,
                   format_options: dict) -> bool:
    """Whether the Dask workers read this input themselves: ``--engine dask``
    on Parquet (a file or a folder) with the embeddings in one list column
    and the labels in the same files (opis_cli.io.shards)."""
    if engine != "dask" or labels is not None or embedding_columns is not None:
        return False
    if input_format not in (None, "parquet") or any(v is not None for v in format_options.values()):
        return False
    from ..io.dataset import _input_kind

    return _input_kind(str(path), input_format) == "parquet"


def evaluate_shards(path: Path, *, engine, embedding_column: str, label_column: str,
                    group_column: str | None, query_column: str | None,
                    gallery_column: str | None, show_progress: bool, **options: Any):
    """``evaluate_path`` for a Parquet input that the Dask workers read: the
    client reads the role columns and the footers only (opis_cli.io.shards)."""
    from ..api import evaluate as run
    from ..errors import InputError
    from ..io.dataset import _source_file
    from ..io.shards import open_parquet
    from ..render.terminal import progress_bar

    ds = open_parquet(str(path), embedding_column=embedding_column, label_column=label_column,
                      group_column=group_column, query_column=query_column,
                      gallery_column=gallery_column)
    sources = []
    for f in ds.files:
        s = _source_file(f)
        sources.append({"path": s.path, "sha256": s.sha256, "size_bytes": s.size_bytes})
    with progress_bar(show_progress) as cb:
        try:
            return run(ds.embeddings, ds.labels, groups=ds.groups, is_query=ds.is_query,
                       is_gallery=ds.is_gallery, progress=cb, sources=sources,
                       group_column=group_column, engine=engine, **options)
        except InputError as e:
            raise InputError(f"{path}: {e}") from e


@app.command()
def evaluate(
    path: Annotated[Path, typer.Argument(
        help="Embeddings: Parquet file or folder, .npy, .npz, Hugging Face dataset, Lance, "
             "safetensors, .pt, HDF5 or FAISS index (see --format).", show_default=False)],
    labels: o.LabelsFile = None,
    embedding_column: o.EmbeddingColumn = opt.EMBEDDING_COLUMN,
    embedding_columns: o.EmbeddingColumns = None,
    label_column: o.LabelColumn = opt.LABEL_COLUMN,
    group_column: o.GroupColumn = None,
    query_column: o.QueryColumn = None,
    gallery_column: o.GalleryColumn = None,
    input_format: o.FormatOpt = None,
    hf_split: o.HfSplit = None,
    tensor_key: o.TensorKey = None,
    tensor_labels_key: o.TensorLabelsKey = None,
    dataset_key: o.DatasetKey = None,
    dataset_labels_key: o.DatasetLabelsKey = None,
    metric: o.MetricOpt = o.Metric(opt.METRIC),
    far_range: o.FarRange = opt.range_text(opt.FAR_RANGE),
    calibration_range: o.CalRange = None,
    num_thresholds: o.NumThresholds = opt.NUM_THRESHOLDS,
    utility: o.UtilityOpt = o.Utility(opt.UTILITY),
    beta: o.Beta = opt.BETA,
    epsilon: o.Epsilon = opt.EPSILON,
    threshold_policy: o.Policy = opt.THRESHOLD_POLICY,
    fairness_alpha: o.FairnessAlpha = opt.FAIRNESS_ALPHA,
    verification: o.VerificationOpt = opt.VERIFICATION,
    dcf: o.Dcf = ":".join(f"{v:g}" for v in opt.DCF),
    calibration: Annotated[Optional[Path], typer.Option(
        "--calibration", help="Apply a calibration file (opis calibrate --method M --out FILE): "
                              "every number on the adjusted distances d - a_q - b_g (SPEC 11). "
                              "Exact and dask engines.")] = None,
    json_out: Annotated[Optional[str], typer.Option(
        "--json", help="Write the result JSON here ('-' for stdout).")] = None,
    curves: Annotated[Optional[Path], typer.Option(
        help="Write per-class utility curves (one row per class and threshold) as .parquet "
             "or .csv.")] = None,
    report: Annotated[Optional[Path], typer.Option(
        help="Write an HTML report with PNG figures into this folder.")] = None,
    block_mib: o.BlockMiB = opt.BLOCK_MIB,
    engine: Annotated[str, typer.Option(
        help="exact (all pairs), knn (approximate: K nearest neighbours), dask "
             "(exact, distributed) or sampled (estimates with 95% intervals: every positive "
             "pair, sampled negatives).")] = opt.ENGINE,
    negatives_per_query: Annotated[int, typer.Option(
        help="Gallery rows drawn per query for --engine sampled (its negatives are those of "
             "other classes).")] = opt.NEGATIVES_PER_QUERY,
    retrieval_queries: Annotated[int, typer.Option(
        help="Queries whose R@k and MAP@R --engine sampled computes exactly against the "
             "whole gallery.")] = opt.RETRIEVAL_QUERIES,
    k: Annotated[int, typer.Option("--k", help="Neighbours per query for --engine knn.")] = opt.K,
    index: Annotated[str, typer.Option(
        help=f"FAISS index for --engine knn: {', '.join(opt.INDEXES[:-1])} or "
             f"{opt.INDEXES[-1]}.")] = opt.INDEX,
    scheduler: Annotated[Optional[str], typer.Option(
        help="Dask scheduler address for --engine dask (default: a local cluster).")] = None,
    workers: Annotated[Optional[int], typer.Option(
        help="Worker processes of the local Dask cluster for --engine dask.")] = None,
    worker_mib: Annotated[int, typer.Option(
        help="Memory budget of one Dask worker, in MiB, when the workers read a Parquet input "
             "themselves (--engine dask): it sets the block size. Results do not depend on "
             "it.")] = opt.WORKER_MIB,
    baseline: o.Baseline = None,
    max_rules: o.MaxRules = None,
    min_rules: o.MinRules = None,
    max_increase: o.MaxIncreaseRules = None,
    max_decrease: o.MaxDecreaseRules = None,
    gate_config: o.Config = None,
    bootstrap: o.Bootstrap = None,
    seed: o.Seed = opt.SEED,
    junit: o.Junit = None,
    mlflow: o.Mlflow = False,
    mlflow_experiment: o.MlflowExperiment = None,
    mlflow_run_id: o.MlflowRunId = None,
    quiet: o.Quiet = False,
    debug: o.Debug = False,
) -> None:
    """Measure OPIS, 10%-OPIS, a recommended threshold and retrieval accuracy.

    With gate rules (--max, --min, --max-increase, --max-decrease, --config) the
    fresh result is also checked like `opis gate`: exit 1 when a rule fails.
    """
    from ..engines import make_engine
    from ..gate.sides import EvaluateGate, Reader
    from ..io.output import TABLE_SUFFIXES, check_output_path, staged
    from ..render.terminal import console, print_bootstrap, print_gate_outcome, print_result

    # What must fail before the files are read; the evaluation options are
    # checked by opis_cli.evaluate, the engine's by the engine.
    opt.check("block_mib", block_mib)
    opt.check("worker_mib", worker_mib)
    opt.check("fairness_alpha", fairness_alpha)
    dcf_costs = opt.parse_dcf(dcf)
    check_outputs((json_out, "--json"))
    if curves:
        check_output_path(curves, "--curves", TABLE_SUFFIXES)
    if report:
        opt.check_report_folder(report, "--report")
        from ..io.output import check_output_folder

        check_output_folder(report, "--report")  # writable: before any work
    cal_opts = {}
    if calibration is not None:
        from ..calibration import load_calibration

        cal, cal_source = load_calibration(calibration)
        if engine not in ("exact", "dask"):
            raise ConfigError(f"--calibration needs --engine exact or dask, not {engine} (the "
                              "knn engine does not take per-row offsets)")
        if cal.metric != metric.value:
            raise ConfigError(f"--calibration {calibration}: fitted with --metric {cal.metric}, "
                              f"this evaluation uses --metric {metric.value}")
        cal_opts = {"calibration": cal, "calibration_source": cal_source}
    from .trackers import log_evaluation, mlflow_target

    tracker = mlflow_target(mlflow, mlflow_experiment, mlflow_run_id)
    gate = EvaluateGate.plan(o.rule_options(max_rules, min_rules, max_increase, max_decrease),
                             baseline=baseline, config=gate_config, bootstrap=bootstrap,
                             seed=seed, junit=junit)
    block_bytes = block_mib * 2**20
    reader = Reader(labels, embedding_column, embedding_columns, label_column, group_column,
                    query_column, gallery_column,
                    **o.format_options(input_format, hf_split, tensor_key, tensor_labels_key,
                                       dataset_key, dataset_labels_key))
    fmt_opts = o.format_options(input_format, hf_split, tensor_key, tensor_labels_key,
                                dataset_key, dataset_labels_key)
    eval_opts = dict(metric=metric.value, far_range=far_range,
                     calibration_range=calibration_range, num_thresholds=num_thresholds,
                     utility=utility.value, beta=beta, epsilon=epsilon,
                     threshold_policy=threshold_policy, fairness_alpha=fairness_alpha,
                     verification=verification, dcf=dcf_costs, block_bytes=block_bytes,
                     **cal_opts)
    if engine == "dask":
        from ..engines.dask import DaskEngine

        eng = DaskEngine(block_bytes=block_bytes, scheduler=scheduler, workers=workers,
                         worker_bytes=worker_mib * 2**20)
    else:
        eng = make_engine(engine, block_bytes=block_bytes, k=k, index=index,
                          scheduler=scheduler, workers=workers,
                          negatives_per_query=negatives_per_query,
                          retrieval_queries=retrieval_queries, seed=seed)
    show = not quiet and sys.stderr.isatty()
    if _worker_shards(path, engine, labels, embedding_columns, fmt_opts["format"],
                      {k_: v for k_, v in fmt_opts.items() if k_ != "format"}):
        result = evaluate_shards(path, engine=eng, embedding_column=embedding_column,
                                 label_column=label_column, group_column=group_column,
                                 query_column=query_column, gallery_column=gallery_column,
                                 show_progress=show, **eval_opts)
    else:
        result = evaluate_path(path, reader, show_progress=show, engine=eng, **eval_opts)
    with staged() as out:
        if json_out:
            out.text(json_out, gate.result_json(result))
        if curves:
            out.table(curves, result.curves_table())
        if report:
            from ..render.report import write_report

            write_report(result, report)
    if not quiet:
        print_result(result, str(path))
        boot = gate.bootstrap(result)
        if boot is not None:
            print_bootstrap(boot)
    outcome = gate.apply(result, str(path))
    if outcome is not None:
        write_gate_outputs(outcome, junit=junit)
        if not quiet:
            console.print()
            print_gate_outcome(outcome)
    if tracker is not None:
        log_evaluation(tracker, result, path=path, json_text=gate.result_json(result),
                       json_out=json_out, curves=curves, report=report, outcome=outcome,
                       quiet=quiet)
    raise exit_with(outcome)
