"""The command-line options shared by several commands, each declared once.

Choices and defaults come from :mod:`opis_cli.options` (the same ones the
Python API uses); constraints are checked there too, not here. Options used
by one command only are declared next to it.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import options as opt

# Choice lists as str Enums, so that typer lists them in --help and rejects others.
Metric = enum.Enum("Metric", {v.replace("-", "_"): v for v in opt.METRICS}, type=str)
Utility = enum.Enum("Utility", {v.replace("-", "_"): v for v in opt.UTILITIES}, type=str)

_FAR_RANGE = opt.range_text(opt.FAR_RANGE)
_POLICIES = ", ".join(opt.POLICIES)

# ------------------------------------------------------------------ every command

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No terminal output but errors.")]
Debug = Annotated[bool, typer.Option(help="Show tracebacks for errors.")]

# ------------------------------------------------------------------ reading embeddings

LabelsFile = Annotated[Optional[Path], typer.Option(
    "--labels", help="Labels for .npy/.npz, tensor, HDF5 or FAISS embeddings: .npy, .txt (one "
                     "per line), .csv or .parquet (column --label-column).")]
EmbeddingColumn = Annotated[str, typer.Option(
    help="Parquet column holding the embedding (list or fixed_size_list of floats).")]
EmbeddingColumns = Annotated[Optional[str], typer.Option(
    help="Glob of numeric Parquet columns forming the embedding, e.g. 'emb_*' "
         "(instead of --embedding-column).")]
LabelColumn = Annotated[str, typer.Option(help="Column holding the class label.")]
GroupColumn = Annotated[Optional[str], typer.Option(
    help="Column holding a group (customer, domain); adds OPIS across groups.")]
QueryColumn = Annotated[Optional[str], typer.Option(
    help="Boolean column: row is a query (default: column 'is_query' if present, else all).")]
GalleryColumn = Annotated[Optional[str], typer.Option(
    help="Boolean column: row is in the gallery (default: 'is_gallery' if present, else all).")]
InputFormat = enum.Enum("InputFormat", {v: v for v in opt.INPUT_FORMATS}, type=str)
FormatOpt = Annotated[Optional[InputFormat], typer.Option(
    "--format", help="Read the input as this format (default: detected from the path): "
                     "parquet, npy, npz, hf (Hugging Face save_to_disk folder or .arrow), "
                     "lance, safetensors, pt (PyTorch), hdf5, faiss (index file).",
    show_default=False)]
HfSplit = Annotated[Optional[str], typer.Option(
    "--hf-split", metavar="NAME",
    help="Split of a Hugging Face DatasetDict folder (required when it has several).")]
TensorKey = Annotated[Optional[str], typer.Option(
    "--tensor-key", metavar="NAME",
    help="safetensors/PyTorch: tensor holding the embeddings (default: the only 2-D float "
         "tensor).")]
TensorLabelsKey = Annotated[Optional[str], typer.Option(
    "--tensor-labels-key", metavar="NAME",
    help="safetensors/PyTorch: tensor holding the labels (default: 'labels'; or --labels).")]
DatasetKey = Annotated[Optional[str], typer.Option(
    "--dataset-key", metavar="PATH",
    help="HDF5: dataset holding the embeddings, e.g. val/emb (default: the only 2-D float "
         "dataset).")]
DatasetLabelsKey = Annotated[Optional[str], typer.Option(
    "--dataset-labels-key", metavar="PATH",
    help="HDF5: dataset holding the labels (default: 'labels'; or --labels).")]


def format_options(input_format, hf_split, tensor_key, tensor_labels_key, dataset_key,
                   dataset_labels_key) -> dict:
    """The format options as :class:`opis_cli.gate.sides.Reader` keywords."""
    return {"format": input_format.value if input_format else None, "hf_split": hf_split,
            "tensor_key": tensor_key, "tensor_labels_key": tensor_labels_key,
            "dataset_key": dataset_key, "dataset_labels_key": dataset_labels_key}

# ------------------------------------------------------------------ evaluation

MetricOpt = Annotated[Metric, typer.Option(help="Distance: cosine (1 - cos) or l2.")]
FarRange = Annotated[str, typer.Option(
    help="Calibration range as global false-accept-rate bounds A:B (exact order statistics "
         "of the negative-pair distances).")]
CalRange = Annotated[Optional[str], typer.Option(
    help="Calibration range as distances LO:HI (overrides --far-range).")]
NumThresholds = Annotated[int, typer.Option(help="Thresholds in the grid, both ends included.")]
UtilityOpt = Annotated[Utility, typer.Option(
    help="Per-class utility: tpr-tnr (F-beta of TPR and TNR) or precision-recall.")]
Beta = Annotated[float, typer.Option(help="F-beta weight; > 1 weights false rejects more.")]
Epsilon = Annotated[float, typer.Option(help="Fraction of worst classes for epsilon-OPIS.")]
MinClassRows = Annotated[int, typer.Option(
    "--min-class-rows", metavar="N", rich_help_panel="Range and threshold",
    help="Exclude classes (and groups) with fewer than N rows from every average; their rows "
         "stay negatives of the others.")]
Policy = Annotated[str, typer.Option(
    help=f"Recommended threshold: {_POLICIES} or far:F (largest threshold with global "
         "FAR <= F).")]
FairnessAlpha = Annotated[float, typer.Option(
    help="Weight of FAR against FRR, in [0, 1], in the fairness of the recommended threshold "
         "(FDR, GARBE, inequity rate).")]
VerificationOpt = Annotated[bool, typer.Option(
    "--verification", help="Also measure the verification view over all pairs: EER, minDCF, "
    "FNMR at FMR 1e-1..1e-6 and each group's EER (exact; one more pass over the pairs).")]
Dcf = Annotated[str, typer.Option(
    "--dcf", help="Detection cost of minDCF (with --verification): P_TARGET:C_MISS:C_FA.")]
BlockMiB = Annotated[int, typer.Option(
    help="Memory for the inner-product tiles held at once, in MiB: as many tiles as fit (one "
         "per worker thread, up to 256 MiB each), at least one. Results do not depend on it.")]

# The same options for `opis compare`, where unset means: as the result JSON side.
MetricOrSide = Annotated[Optional[Metric], typer.Option(
    "--metric", help=f"Distance for embeddings sides (default: the result JSON side's, else "
                     f"{opt.METRIC}).")]
FarRangeOrDefault = Annotated[Optional[str], typer.Option(
    "--far-range", help="Calibration range as global FAR bounds A:B, for the side(s) "
                        f"evaluated on their own range (default: {_FAR_RANGE}).")]
NumThresholdsOrSide = Annotated[Optional[int], typer.Option(
    "--num-thresholds",
    help=f"Thresholds in the grid (default: the baseline's, else {opt.NUM_THRESHOLDS}).")]
UtilityOrSide = Annotated[Optional[Utility], typer.Option(
    "--utility", help=f"Per-class utility (default: the result JSON side's, else "
                      f"{opt.UTILITY}).")]
BetaOrSide = Annotated[Optional[float], typer.Option(
    "--beta", help=f"F-beta weight (default: the result JSON side's, else {opt.BETA:g}).")]
EpsilonOrSide = Annotated[Optional[float], typer.Option(
    "--epsilon", help="Fraction of worst classes (default: the result JSON side's, else "
                      f"{opt.EPSILON:g}).")]
PolicyOrSide = Annotated[Optional[str], typer.Option(
    "--threshold-policy", help="Recommended threshold policy (default: the result JSON "
                               f"side's, else {opt.THRESHOLD_POLICY}).")]

# ------------------------------------------------------------------ gate rules

_RULE_HELP = ("Metric names are the keys of the result JSON's headline: opis, epsilon_opis, "
              "recall_at_1, map_at_r, fdr, garbe, far_ratio, ... Repeatable.")
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
Baseline = Annotated[Optional[Path], typer.Option(
    "--baseline", help="Baseline result JSON for --max-increase/--max-decrease (overrides "
                       "the config file's baseline).")]
Config = Annotated[Optional[Path], typer.Option(
    "--config", help="TOML file with gate rules: a tool.opis.gate table in pyproject.toml, "
                     "or opis.toml (a gate table or flat keys).")]


def rule_options(max_rules, min_rules, max_increase, max_decrease) -> dict:
    """The rule options by kind, as :func:`opis_cli.gate.rules.rules_from_options` reads them."""
    return {"max": max_rules, "min": min_rules, "max-increase": max_increase,
            "max-decrease": max_decrease}


# ------------------------------------------------------------------ bootstrap

Bootstrap = Annotated[Optional[int], typer.Option(
    "--bootstrap", metavar="N",
    help="Bootstrap resamples over the evaluated classes (e.g. 1000), for intervals of OPIS "
         "and epsilon-OPIS (evaluate stores them under 'bootstrap' in the result JSON) and of "
         "their changes. A side that already holds a bootstrap decides N and the seed for "
         f"both, so that they pair (default where one is needed: {opt.RESAMPLES}).")]
Seed = Annotated[int, typer.Option(help="Seed of the bootstrap and of --engine sampled "
                                        "(numpy default_rng).")]
Confidence = Annotated[Optional[float], typer.Option(
    help=f"Level of the bootstrap intervals (default: {opt.CONFIDENCE:g}, or the config's "
         "confidence).")]

# ------------------------------------------------------------------ outputs

Junit = Annotated[Optional[Path], typer.Option(
    "--junit", help="Write the gate outcome as JUnit XML (one test case per rule).")]
Markdown = Annotated[Optional[str], typer.Option(
    "--markdown", help="Write a Markdown summary here ('-' for stdout), e.g. for "
                       "$GITHUB_STEP_SUMMARY.")]

# ---- trackers

Mlflow = Annotated[bool, typer.Option(
    "--mlflow", help="Log the headline numbers, options, JSON, curves and report to an MLflow "
                     "run, after the outputs are written (tracking URI and experiment from "
                     "MLFLOW_TRACKING_URI, MLFLOW_EXPERIMENT_NAME; needs the mlflow extra).")]
MlflowExperiment = Annotated[Optional[str], typer.Option(
    "--mlflow-experiment", metavar="NAME",
    help="MLflow experiment of the new run (created if missing); implies --mlflow.")]
MlflowRunId = Annotated[Optional[str], typer.Option(
    "--mlflow-run-id", metavar="ID",
    help="Log into this existing MLflow run (e.g. the training run) instead of a new one; "
         "implies --mlflow.")]
