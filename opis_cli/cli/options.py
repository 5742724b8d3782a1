"""The command-line options shared by several commands, each declared once.

Choices and defaults come from :mod:`opis_cli.options` (the same ones the
Python API uses); constraints are checked there too, not here. Options used
by one command only are declared next to it.
"""

from __future__ import annotations

import enum
import functools
import inspect
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from .. import options as opt
from ..io.formats import FORMAT_OPTIONS, FORMATS, FormatOption, format_help

# Help panels (`rich_help_panel=`), in the order --help shows them. The options of
# the "Advanced" panel are hidden from --help and shown by --help-all (cli.root).
INPUT = "Input"
RANGE = "Range and threshold"
ENGINE = "Engine"
OUTPUTS = "Outputs"
GATE = "Gate"
TRACKERS = "Trackers"
DIAGNOSIS = "Diagnosis"
ADVANCED = "Advanced"
PANELS = (INPUT, RANGE, ENGINE, OUTPUTS, GATE, TRACKERS, DIAGNOSIS, ADVANCED)
#: keywords of an option of the "Advanced" panel: ``typer.Option(..., **ADVANCED_OPTION)``
ADVANCED_OPTION = {"rich_help_panel": ADVANCED, "hidden": True}

# Choice lists as str Enums, so that typer lists them in --help and rejects others.
Metric = enum.Enum("Metric", {v.replace("-", "_"): v for v in opt.METRICS}, type=str)
Utility = enum.Enum("Utility", {v.replace("-", "_"): v for v in opt.UTILITIES}, type=str)

_FAR_RANGE = opt.range_text(opt.FAR_RANGE)
_POLICIES = ", ".join(opt.POLICIES)

# ------------------------------------------------------------------ every command

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No terminal output but errors.",
    rich_help_panel=OUTPUTS)]
Debug = Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.",
    **ADVANCED_OPTION)]

# ------------------------------------------------------------------ reading embeddings

LabelsFile = Annotated[Optional[Path], typer.Option(
    "--labels", help="Labels for .npy/.npz, tensor, HDF5 or FAISS inputs: .npy, .txt (one "
                     "per line), .csv or .parquet.",
                     rich_help_panel=INPUT)]
EmbeddingColumn = Annotated[str, typer.Option(
    help="Parquet column holding the embedding (list or fixed_size_list of floats).",
    rich_help_panel=INPUT)]
EmbeddingColumns = Annotated[Optional[str], typer.Option(
    help="Glob of numeric Parquet columns forming the embedding, e.g. 'emb_*' "
         "(instead of --embedding-column).", **ADVANCED_OPTION)]
LabelColumn = Annotated[str, typer.Option(help="Column holding the class label.",
    rich_help_panel=INPUT)]
GroupColumn = Annotated[Optional[str], typer.Option(
    help="Column holding a group (customer, domain); adds OPIS across groups.",
    rich_help_panel=INPUT)]
QueryColumn = Annotated[Optional[str], typer.Option(
    help="Boolean column: row is a query (default: column 'is_query' if present, else all).",
    rich_help_panel=INPUT)]
GalleryColumn = Annotated[Optional[str], typer.Option(
    help="Boolean column: row is in the gallery (default: 'is_gallery' if present, else all).",
    rich_help_panel=INPUT)]
# --format and the format options come from the formats' declarations (opis_cli.io.formats)
InputFormat = enum.Enum("InputFormat", {v: v for v in FORMATS}, type=str)
FormatOpt = Annotated[Optional[InputFormat], typer.Option(
    "--format", metavar="FORMAT", help=format_help(), show_default=False,
    rich_help_panel=INPUT)]


def _format_option(option: FormatOption) -> Any:
    return Annotated[Optional[str], typer.Option(option.flag, metavar=option.metavar,
                                                 help=option.help, **ADVANCED_OPTION)]


def with_format_options(command: Callable) -> Callable:
    """A command that takes ``--format`` (its ``input_format`` parameter) and
    every format option of :data:`opis_cli.io.formats.FORMAT_OPTIONS`, shown
    right after ``--format``; the command gets them as one ``format_options``
    dict (option name -> value, None when not given) instead.

    Apply it below ``@app.command``: Typer reads the signature built here.
    """
    sig = inspect.signature(command, eval_str=True)
    params = []
    for p in sig.parameters.values():
        if p.name == "format_options":
            continue
        params.append(p)
        if p.name == "input_format":
            params += [inspect.Parameter(o.name, p.kind, default=None,
                                         annotation=_format_option(o))
                       for o in FORMAT_OPTIONS.values()]

    @functools.wraps(command)
    def run(**kwargs: Any) -> Any:
        given = {name: kwargs.pop(name, None) for name in FORMAT_OPTIONS}
        return command(**kwargs, format_options=given)

    run.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in params}
    del run.__wrapped__  # Typer and inspect read the signature above
    return run


def read_options(labels: Optional[Path], embedding_column: str, embedding_columns: Optional[str],
                 label_column: str, group_column: Optional[str], query_column: Optional[str],
                 gallery_column: Optional[str], input_format: Optional[enum.Enum],
                 format_options: dict[str, Optional[str]]) -> Any:
    """The input options of a command as one :class:`opis_cli.io.ReadOptions`."""
    from ..io.dataset import ReadOptions

    return ReadOptions(labels, embedding_column, embedding_columns, label_column, group_column,
                       query_column, gallery_column,
                       input_format.value if input_format else None, format_options)

# ------------------------------------------------------------------ evaluation

MetricOpt = Annotated[Metric, typer.Option(help="Distance: cosine (1 - cos) or l2.",
    rich_help_panel=RANGE)]
FarRange = Annotated[str, typer.Option(
    metavar="A:B", help="Calibration range as global false-accept-rate bounds A:B.",
    rich_help_panel=RANGE)]
CalRange = Annotated[Optional[str], typer.Option(
    metavar="LO:HI", help="Calibration range as distances LO:HI (overrides --far-range).",
    rich_help_panel=RANGE)]
NumThresholds = Annotated[int, typer.Option(help="Thresholds in the grid, both ends included.",
                                            **ADVANCED_OPTION)]
UtilityOpt = Annotated[Utility, typer.Option(
    help="Per-class utility: tpr-tnr or precision-recall (F-beta).",
    rich_help_panel=RANGE)]
Beta = Annotated[float, typer.Option(help="F-beta weight; > 1 weights false rejects more.",
                                     **ADVANCED_OPTION)]
Epsilon = Annotated[float, typer.Option(help="Fraction of worst classes for epsilon-OPIS.",
                                        **ADVANCED_OPTION)]
MinClassRows = Annotated[int, typer.Option(
    "--min-class-rows", metavar="N", rich_help_panel=RANGE,
    help="Leave classes of fewer than N rows out of every average (their rows stay "
         "negatives).")]
Policy = Annotated[str, typer.Option(
    metavar="POLICY", help=f"Recommended threshold: {_POLICIES} or far:F (global FAR <= F).",
    rich_help_panel=RANGE)]
FairnessAlpha = Annotated[float, typer.Option(
    help="Weight of FAR against FRR, in [0, 1], in the fairness of the recommended threshold "
         "(FDR, GARBE, inequity rate).", **ADVANCED_OPTION)]
VerificationOpt = Annotated[bool, typer.Option(
    "--verification", help="Also measure EER, minDCF, FNMR at FMR (one more pass).",
    rich_help_panel=RANGE)]
Dcf = Annotated[str, typer.Option(
    "--dcf", help="Detection cost of minDCF (with --verification): P_TARGET:C_MISS:C_FA.",
    **ADVANCED_OPTION)]
BlockMiB = Annotated[int, typer.Option(
    help="Memory for the inner-product tiles held at once, in MiB: as many tiles as fit (one "
         "per worker thread, up to 256 MiB each), at least one. Results do not depend on it.",
         **ADVANCED_OPTION)]

# The same options for `opis compare`, where unset means: as the result JSON side.
MetricOrSide = Annotated[Optional[Metric], typer.Option(
    "--metric", help=f"Distance for embeddings sides (default: the result JSON side's, else "
                     f"{opt.METRIC}).", rich_help_panel=RANGE)]
FarRangeOrDefault = Annotated[Optional[str], typer.Option(
    "--far-range", help="Calibration range as global FAR bounds A:B, for the side(s) "
                        f"evaluated on their own range (default: {_FAR_RANGE}).",
                        rich_help_panel=RANGE)]
NumThresholdsOrSide = Annotated[Optional[int], typer.Option(
    "--num-thresholds",
    help=f"Thresholds in the grid (default: the baseline's, else {opt.NUM_THRESHOLDS}).",
    rich_help_panel=RANGE)]
UtilityOrSide = Annotated[Optional[Utility], typer.Option(
    "--utility", help=f"Per-class utility (default: the result JSON side's, else "
                      f"{opt.UTILITY}).", rich_help_panel=RANGE)]
BetaOrSide = Annotated[Optional[float], typer.Option(
    "--beta", help=f"F-beta weight (default: the result JSON side's, else {opt.BETA:g}).",
    rich_help_panel=RANGE)]
EpsilonOrSide = Annotated[Optional[float], typer.Option(
    "--epsilon", help="Fraction of worst classes (default: the result JSON side's, else "
                      f"{opt.EPSILON:g}).", rich_help_panel=RANGE)]
PolicyOrSide = Annotated[Optional[str], typer.Option(
    "--threshold-policy", help="Recommended threshold policy (default: the result JSON "
                               f"side's, else {opt.THRESHOLD_POLICY}).", rich_help_panel=RANGE)]

# ------------------------------------------------------------------ gate rules

_RULE_HELP = "METRIC: opis, epsilon_opis, recall_at_1, map_at_r, garbe, ... Repeatable."
MaxRules = Annotated[Optional[list[str]], typer.Option(
    "--max", metavar="METRIC=V", help="Fail when METRIC > V, e.g. --max opis=0.02. " + _RULE_HELP,
    rich_help_panel=GATE)]
MinRules = Annotated[Optional[list[str]], typer.Option(
    "--min", metavar="METRIC=V", help="Fail when METRIC < V, e.g. --min recall_at_1=0.9.",
    rich_help_panel=GATE)]
MaxIncreaseRules = Annotated[Optional[list[str]], typer.Option(
    "--max-increase", metavar="METRIC=D",
    help="Fail when METRIC rose by more than D over the baseline: 0.002, 10% or 'ci' (the "
         "bootstrap interval of the change lies above 0).", rich_help_panel=GATE)]
MaxDecreaseRules = Annotated[Optional[list[str]], typer.Option(
    "--max-decrease", metavar="METRIC=D",
    help="Fail when METRIC fell by more than D below the baseline (D as for --max-increase).",
    rich_help_panel=GATE)]
Baseline = Annotated[Optional[Path], typer.Option(
    "--baseline", help="Baseline result JSON for --max-increase/--max-decrease.",
    rich_help_panel=GATE)]
Config = Annotated[Optional[Path], typer.Option(
    "--config", help="TOML file with gate rules: opis.toml, or pyproject.toml's "
                     "tool.opis.gate table.", rich_help_panel=GATE)]


def rule_options(max_rules, min_rules, max_increase, max_decrease) -> dict:
    """The rule options by kind, as :func:`opis_cli.gate.rules.rules_from_options` reads them."""
    return {"max": max_rules, "min": min_rules, "max-increase": max_increase,
            "max-decrease": max_decrease}


# ------------------------------------------------------------------ bootstrap

Bootstrap = Annotated[Optional[int], typer.Option(
    "--bootstrap", metavar="N",
    help="Bootstrap resamples over the classes: intervals of OPIS and of its changes "
         f"(default where needed: {opt.RESAMPLES}).",
         rich_help_panel=GATE)]
Seed = Annotated[int, typer.Option(help="Seed of the bootstrap and of --engine sampled "
                                        "(numpy default_rng).", **ADVANCED_OPTION)]
Confidence = Annotated[Optional[float], typer.Option(
    help=f"Level of the bootstrap intervals (default: {opt.CONFIDENCE:g}, or the config's "
         "confidence).", rich_help_panel=GATE)]

# ------------------------------------------------------------------ outputs

Junit = Annotated[Optional[Path], typer.Option(
    "--junit", metavar="PATH", help="Write the gate outcome as JUnit XML (a test case a rule).",
    rich_help_panel=GATE)]
Markdown = Annotated[Optional[str], typer.Option(
    "--markdown", metavar="PATH", help="Write a Markdown summary here ('-' for stdout), e.g. for "
                       "$GITHUB_STEP_SUMMARY.", rich_help_panel=OUTPUTS)]

# ---- trackers

Mlflow = Annotated[bool, typer.Option(
    "--mlflow", help="Log the numbers, options and outputs to an MLflow run (MLFLOW_TRACKING_URI, "
                     "MLFLOW_EXPERIMENT_NAME; the mlflow extra).",
                     rich_help_panel=TRACKERS)]
MlflowExperiment = Annotated[Optional[str], typer.Option(
    "--mlflow-experiment", metavar="NAME",
    help="MLflow experiment of the new run (created if missing); implies --mlflow.",
    rich_help_panel=TRACKERS)]
MlflowRunId = Annotated[Optional[str], typer.Option(
    "--mlflow-run-id", metavar="ID",
    help="Log into this existing MLflow run (e.g. the training run) instead of a new one; "
         "implies --mlflow.", rich_help_panel=TRACKERS)]
