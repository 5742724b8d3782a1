"""``opis calibrate``: will a threshold chosen today hold on classes never seen? (SPEC 12)"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .. import options as opt
from . import options as o
from .options import ADVANCED_OPTION, ENGINE, GATE, INPUT, OUTPUTS, RANGE, TRACKERS  # noqa: F401
from ..errors import ConfigError, InputError
from ..io.formats import path_formats
from .firstrun import with_compile_note
from .root import app, check_inputs, check_outputs, check_report, examples, stdout_taken, wrote


def _read(path: Path, read, progress):
    """One embeddings input (``read``: its ReadOptions) as :class:`opis_cli.transfer.Data`
    and its provenance entries."""
    from ..app import load_dataset, sources_of
    from ..transfer import Data

    ds = load_dataset(path, read, progress=progress)
    return Data(ds.embeddings, ds.labels, ds.groups, ds.is_query, ds.is_gallery), sources_of(ds)


def _fit_and_write(path, read, method, target, out, options, json_out, quiet, show):
    """``--out``: fit one calibration on all of PATH and write its file."""
    from ..calibration import fit
    from ..io.output import staged
    from ..render.escape import terminal_text
    from ..render.terminal import console, progress_bar, results_on_stderr

    with progress_bar(show) as bar:
        cb = with_compile_note(bar, not quiet)
        data, sources = _read(path, read, cb)
        try:
            cal = fit(data.embeddings, data.labels, method=method, target=target,
                      metric=options["metric"], groups=data.groups, is_query=data.is_query,
                      is_gallery=data.is_gallery, seed=options["seed"],
                      block_bytes=options["block_bytes"], progress=cb,
                      fitted_on={"inputs": sources})
        except InputError as e:
            raise InputError(f"{path}: {e}") from e
    with staged() as stage:
        stage.text(out, cal.to_json())
        if json_out:
            stage.text(json_out, cal.to_json())
    wrote(out, json_out, quiet=quiet)
    if not quiet:
        n = (len(cal.thresholds) if cal.thresholds is not None else 0)
        what = {"global": "one global threshold", "per-class": f"{n} class thresholds",
                "per-group": f"{n} group thresholds"}.get(cal.method, f"{n} centroid thresholds")
        with results_on_stderr(stdout_taken(json_out)):
            console.print(terminal_text(
                f"{out}: {cal.method} calibration of {path} at FAR {cal.target_far:g}: global "
                f"threshold {cal.global_threshold:.6g}, {what}. Apply it with: opis evaluate "
                f"DATA --calibration {out}"), highlight=False, soft_wrap=True)


@app.command(epilog=examples(
    "opis calibrate sample_data/digits_weak.parquet",
    "opis calibrate sample_data/digits_weak.parquet --method per-class",
    "opis calibrate weak.parquet --method per-class --out cal.json"))
@o.with_format_options
def calibrate(
    path: Annotated[Path, typer.Argument(
        help="Embeddings to split into folds, or the calibration side with --test: "
             f"{path_formats()} (see --format).", show_default=False)],
    test: Annotated[Optional[Path], typer.Option(
        "--test", help="Test side of an explicit split (then PATH is the calibration side and "
                       "--folds/--seed are unused).", rich_help_panel=INPUT)] = None,
    folds: Annotated[int, typer.Option(
        help="Class-disjoint folds (group-disjoint with --group-column): each fold in turn is "
             "the unseen test side, the others the calibration side.",
             rich_help_panel=RANGE)] = opt.FOLDS,
    seed: Annotated[int, typer.Option(
        help="Seed of the fold assignment: names sorted by crc32 of 'SEED:name' (SPEC 12).",
        **ADVANCED_OPTION)
    ] = opt.SEED,
    split: Annotated[Optional[str], typer.Option(
        help="What the folds hold apart: classes (unseen classes), groups (unseen groups of "
             "--group-column: new customers) or rows (every class's rows spread over the folds: "
             "the closed set, for per-class/per-group calibrations). Default: groups with "
             "--group-column, else classes.", rich_help_panel=RANGE)] = None,
    target: Annotated[str, typer.Option(
        help="How the calibration side picks its threshold: far:F (the distance at global "
             "FAR F, exact) or max-mean-utility / max-worst-utility (on its own grid).",
             rich_help_panel=RANGE)
    ] = opt.TARGET,
    method: Annotated[Optional[list[str]], typer.Option(
        "--method", metavar="METHOD",
        help="A calibration (SPEC 11): global, per-class, per-group or cluster:K. With --out, "
             "fit it on all of PATH and write the calibration file; otherwise fit each given "
             "method on every calibration side and compare them on the unseen side. "
             "Repeatable.", rich_help_panel=RANGE)] = None,
    out: Annotated[Optional[Path], typer.Option(
        "--out", help="Write the calibration file (JSON) fitted on all of PATH with the one "
                      "--method, at --target far:F; apply it with opis evaluate "
                      "--calibration.", rich_help_panel=OUTPUTS)] = None,
    labels: o.LabelsFile = None,
    test_labels: Annotated[Optional[Path], typer.Option(
        help="Labels for a .npy/.npz --test file (as --labels for PATH).",
        rich_help_panel=INPUT)] = None,
    embedding_column: o.EmbeddingColumn = opt.EMBEDDING_COLUMN,
    embedding_columns: o.EmbeddingColumns = None,
    label_column: o.LabelColumn = opt.LABEL_COLUMN,
    group_column: Annotated[Optional[str], typer.Option(
        help="Column holding a group (customer, domain): split groups into folds instead of "
             "classes, to ask whether the threshold holds for new customers.",
             rich_help_panel=INPUT)] = None,
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
    json_out: Annotated[Optional[str], typer.Option(
        "--json", metavar="PATH", help="Write the result JSON here ('-' for stdout).",
        rich_help_panel=OUTPUTS)] = None,
    report: Annotated[Optional[Path], typer.Option(
        help="Write an HTML report with PNG figures into this folder.",
        rich_help_panel=OUTPUTS)] = None,
    block_mib: o.BlockMiB = opt.BLOCK_MIB,
    mlflow: o.Mlflow = False,
    mlflow_experiment: o.MlflowExperiment = None,
    mlflow_run_id: o.MlflowRunId = None,
    quiet: o.Quiet = False,
    debug: o.Debug = False,
) -> None:
    """Does a threshold chosen on the classes you have hold on classes you have never seen?

    Picks a threshold on a calibration side (at a target global FAR, or by a policy) and
    measures it on a test side whose classes the calibration side never saw: the FAR and
    TPR achieved, the spread of per-class FAR, and the threshold the test side alone would
    have needed. The --far-range, --calibration-range, --num-thresholds, --utility, --beta
    and --epsilon options only matter for a policy --target.
    """
    opt.check("block_mib", block_mib)
    check_inputs(path, test)  # before the imports of numpy: a missing file fails at once
    from dataclasses import replace

    from ..io.dataset import check_columns

    read = o.read_options(labels, embedding_column, embedding_columns, label_column,
                          group_column, query_column, gallery_column, input_format,
                          format_options)
    # a missing column, from the Parquet footer: before pyarrow and numpy load
    check_columns(path, read)
    if test is not None:
        check_columns(test, replace(read, labels=test_labels))

    methods = _check_methods_and_outputs(method, target, out, test, folds, json_out, report)
    from .trackers import log_calibration, mlflow_target

    tracker = mlflow_target(mlflow, mlflow_experiment, mlflow_run_id)
    if tracker is not None and out is not None:
        raise ConfigError("--mlflow logs the transfer numbers; it does not apply to --out")
    show = not quiet and sys.stderr.isatty()
    options: dict[str, Any] = dict(
        folds=folds, seed=seed, target=target,
        split=split or ("groups" if group_column else "classes"), methods=methods,
        metric=metric.value, far_range=far_range, calibration_range=calibration_range,
        num_thresholds=num_thresholds, utility=utility.value, beta=beta, epsilon=epsilon,
        block_bytes=block_mib * 2**20, group_column=group_column)
    if out is not None:
        _fit_and_write(path, read, methods[0], target, out, options, json_out,
                       quiet, show)
        return
    result = _transfer(path, read, test, test_labels, options, show=show, quiet=quiet)
    source = str(path) if test is None else f"{path} -> {test}"
    _write_and_show(result, source, json_out=json_out, report=report, quiet=quiet)
    if tracker is not None:
        log_calibration(tracker, result, path=source, json_text=result.to_json(),
                        json_out=json_out, report=report, quiet=quiet)


def _check_methods_and_outputs(method, target: str, out, test, folds: int, json_out,
                               report) -> list[str]:
    """--target, every --method, what --out excludes, --folds and the output
    paths (a report folder must be writable), before any work; returns the
    methods."""
    from ..calibration import parse_method
    from ..transfer import Target

    Target.parse(target)
    methods = list(method or [])
    for m in methods:
        parse_method(m)
    if out is not None:
        if len(methods) != 1:
            raise ConfigError(f"--out writes one calibration: give exactly one --method (got "
                              f"{len(methods)})")
        if test is not None:
            raise ConfigError("--out fits on all of PATH; it takes no --test")
        if not target.strip().startswith("far:"):
            raise ConfigError(f"--target {target}: a calibration is fitted at a FAR, e.g. "
                              "far:0.01")
        check_outputs((str(out), "--out"))
    if test is None:
        opt.check("folds", folds)
    check_outputs((json_out, "--json"))
    check_report(report)  # a writable folder: before any work
    return methods


def _transfer(path: Path, read, test: Optional[Path], test_labels, options: dict, *,
              show: bool, quiet: bool):
    """Read PATH (and --test) with a progress bar and run
    :func:`opis_cli.transfer.calibrate` on them."""
    from dataclasses import replace

    from ..render.terminal import progress_bar
    from ..transfer import calibrate as run

    with progress_bar(show) as bar:
        cb = with_compile_note(bar, not quiet)
        data, sources = _read(path, read, cb)
        test_data = None
        if test is not None:
            test_data, more = _read(test, replace(read, labels=test_labels), cb)
            sources += more
        try:
            return run(data, test=test_data, progress=cb, sources=sources, **options)
        except InputError as e:
            raise InputError(f"{path}: {e}") from e


def _write_and_show(result, source: str, *, json_out, report, quiet: bool) -> None:
    """The JSON and report, staged (both or neither), then the terminal's tables."""
    from ..io.output import staged

    page = None
    with staged() as out:
        if json_out:
            out.text(json_out, result.to_json())
        if report:
            from ..render.report.transfer import write_transfer_report

            page = write_transfer_report(result, report, source)
    wrote(json_out, page, quiet=quiet)
    if not quiet:
        from ..render.terminal import results_on_stderr
        from ..render.transfer_text import print_transfer

        with results_on_stderr(stdout_taken(json_out)):
            print_transfer(result, source)
