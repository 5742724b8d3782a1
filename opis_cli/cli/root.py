"""The ``opis`` command: a thin Typer layer over the Python API.

Every ``OpisError`` becomes one ``Error: ...`` line on stderr and exit code 2
(a traceback only with ``--debug``). Data goes to files or stdout; messages
for people go to stderr.
"""

from __future__ import annotations

import enum
import sys
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import __version__
from .compare import (BaselineOpt, BootstrapOpt, ConfigOpt, EvaluateGate, JunitOpt,
                          MaxDecreaseRules, MaxIncreaseRules, MaxRules, MinRules, SeedOpt)
from ..errors import OpisError

app = typer.Typer(
    name="opis",
    help="Can one distance threshold serve every class of an embedding model? "
         "Measures OPIS and 10%-OPIS (Zhang et al., ICLR 2024), recommends a global threshold "
         "and shows the per-class false accept / false reject spread at it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class ExitCode(enum.IntEnum):
    OK = 0
    GATE_FAILED = 1
    USAGE = 2


class Metric(str, enum.Enum):
    cosine = "cosine"
    l2 = "l2"


class Utility(str, enum.Enum):
    tpr_tnr = "tpr-tnr"
    precision_recall = "precision-recall"


_DEBUG = False


def fail(message: str) -> "typer.Exit":
    """Print one error line and return the exit to raise."""
    from rich.text import Text

    from ..render.terminal import console

    # user data (file names, labels) must print as given: no markup, no emoji codes
    console.print(Text.assemble(("Error:", "bold red"), " ", " ".join(str(message).split("\n"))),
                  highlight=False, soft_wrap=True)
    return typer.Exit(ExitCode.USAGE)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"opis {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """opis: threshold consistency of embedding models."""


# Options shared by the commands that evaluate embeddings ----------------------
EmbeddingColumn = Annotated[str, typer.Option(help="Parquet column holding the embedding "
                                              "(list or fixed_size_list of floats).")]
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
LabelsFile = Annotated[Optional[Path], typer.Option(
    "--labels", help="Labels for .npy/.npz embeddings: .npy, .txt (one per line), .csv or "
                     ".parquet (column --label-column).")]
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
PolicyOpt = Annotated[str, typer.Option(
    help="Recommended threshold: max-mean-utility, max-worst-utility or far:F "
         "(largest threshold with global FAR <= F).")]
BlockMiB = Annotated[int, typer.Option(
    help="Memory for one block of distances, in MiB (results do not depend on it).")]


def load_and_evaluate(
    path: Path, *, labels: Optional[Path], embedding_column: str, embedding_columns: Optional[str],
    label_column: str, group_column: Optional[str], query_column: Optional[str],
    gallery_column: Optional[str], show_progress: bool, **options,
):
    """Read one embeddings file and evaluate it (shared by evaluate and compare)."""
    from ..api import evaluate
    from ..errors import InputError
    from ..io import read_dataset
    from ..render.terminal import progress_bar

    with progress_bar(show_progress) as cb:
        reader_cb = (lambda done, total: cb("reading", done, total)) if cb else None
        ds = read_dataset(str(path), labels_path=str(labels) if labels else None,
                          embedding_column=embedding_column,
                          embedding_columns=embedding_columns, label_column=label_column,
                          group_column=group_column, query_column=query_column,
                          gallery_column=gallery_column, progress=reader_cb)
        sources = [{"path": s.path, "sha256": s.sha256, "size_bytes": s.size_bytes}
                   for s in ds.sources]
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                result = evaluate(ds.embeddings, ds.labels, groups=ds.groups,
                                  is_query=ds.is_query, is_gallery=ds.is_gallery, progress=cb,
                                  sources=sources, group_column=group_column, **options)
        except InputError as e:
            raise InputError(f"{path}: {e}") from e
    _show_warnings(caught)
    return result


def _show_warnings(caught) -> None:
    """The engines' warnings (e.g. knn truncation) as one ``Warning:`` line each."""
    from rich.text import Text

    from ..render.terminal import console

    seen = set()
    for w in caught:
        msg = " ".join(str(w.message).split())
        if msg in seen or not issubclass(w.category, UserWarning):
            continue
        seen.add(msg)
        console.print(Text.assemble(("Warning:", "bold yellow"), " ", msg), soft_wrap=True)


@app.command()
def evaluate(
    path: Annotated[Path, typer.Argument(help="Embeddings: Parquet file or folder, .npy or .npz.",
                                         show_default=False)],
    labels: LabelsFile = None,
    embedding_column: EmbeddingColumn = "embedding",
    embedding_columns: EmbeddingColumns = None,
    label_column: LabelColumn = "label",
    group_column: GroupColumn = None,
    query_column: QueryColumn = None,
    gallery_column: GalleryColumn = None,
    metric: MetricOpt = Metric.cosine,
    far_range: FarRange = "0.01:0.1",
    calibration_range: CalRange = None,
    num_thresholds: NumThresholds = 101,
    utility: UtilityOpt = Utility.tpr_tnr,
    beta: Beta = 1.0,
    epsilon: Epsilon = 0.1,
    threshold_policy: PolicyOpt = "max-mean-utility",
    json_out: Annotated[Optional[str], typer.Option(
        "--json", help="Write the result JSON here ('-' for stdout).")] = None,
    curves: Annotated[Optional[Path], typer.Option(
        help="Write per-class utility curves (one row per class and threshold) as .parquet "
             "or .csv.")] = None,
    report: Annotated[Optional[Path], typer.Option(
        help="Write an HTML report with PNG figures into this folder.")] = None,
    block_mib: BlockMiB = 512,
    engine: Annotated[str, typer.Option(
        help="exact (all pairs), knn (approximate: K nearest neighbours) or dask "
             "(exact, distributed).")] = "exact",
    k: Annotated[int, typer.Option("--k", help="Neighbours per query for --engine knn.")] = 100,
    index: Annotated[str, typer.Option(help="FAISS index for --engine knn: hnsw, ivf or flat.")] = "hnsw",
    scheduler: Annotated[Optional[str], typer.Option(
        help="Dask scheduler address for --engine dask (default: a local cluster).")] = None,
    workers: Annotated[Optional[int], typer.Option(
        help="Worker processes of the local Dask cluster for --engine dask.")] = None,
    baseline: BaselineOpt = None,
    max_rules: MaxRules = None,
    min_rules: MinRules = None,
    max_increase: MaxIncreaseRules = None,
    max_decrease: MaxDecreaseRules = None,
    gate_config: ConfigOpt = None,
    bootstrap: BootstrapOpt = None,
    seed: SeedOpt = 0,
    junit: JunitOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No terminal output but errors.")] = False,
    debug: Annotated[bool, typer.Option(help="Show tracebacks for errors.")] = False,
) -> None:
    """Measure OPIS, 10%-OPIS, a recommended threshold and retrieval accuracy.

    With gate rules (--max, --min, --max-increase, --max-decrease, --config) the
    fresh result is also checked like `opis gate`: exit 1 when a rule fails.
    """
    global _DEBUG
    _DEBUG = debug
    from ..engines import make_engine
    from ..errors import ConfigError
    from ..io.output import TABLE_SUFFIXES, check_output_path, staged
    from ..render.terminal import print_result

    if block_mib < 1:
        raise ConfigError(f"--block-mib must be a positive number of MiB, got {block_mib}")
    if json_out:
        check_output_path(json_out, "--json")
    if curves:
        check_output_path(curves, "--curves", TABLE_SUFFIXES)
    if report and report.exists() and not report.is_dir():
        raise ConfigError(f"--report {report}: exists and is not a folder")
    gate = EvaluateGate.plan(baseline=baseline, max_rules=max_rules, min_rules=min_rules,
                             max_increase=max_increase, max_decrease=max_decrease,
                             config=gate_config, bootstrap=bootstrap, seed=seed, junit=junit)
    result = load_and_evaluate(
        path, labels=labels, embedding_column=embedding_column,
        embedding_columns=embedding_columns, label_column=label_column,
        group_column=group_column, query_column=query_column, gallery_column=gallery_column,
        show_progress=not quiet and sys.stderr.isatty(), metric=metric.value,
        far_range=far_range, calibration_range=calibration_range,
        num_thresholds=num_thresholds, utility=utility.value, beta=beta, epsilon=epsilon,
        threshold_policy=threshold_policy, block_bytes=block_mib * 2**20,
        engine=make_engine(engine, block_bytes=block_mib * 2**20, k=k, index=index,
                           scheduler=scheduler, workers=workers))
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
    raise typer.Exit(gate.finish(result, str(path), quiet=quiet))


def _register_extensions() -> None:
    """Commands that live in their own modules (report, compare, gate)."""
    from . import compare as cli_compare
    from . import report as cli_report

    cli_report.register(app)
    cli_compare.register(app)


_register_extensions()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``opis`` console script."""
    global _DEBUG
    args = list(sys.argv[1:] if argv is None else argv)
    _DEBUG = "--debug" in args
    try:
        rc = app(args=args, prog_name="opis", standalone_mode=False)
        return int(rc or 0)
    except typer.Exit as e:
        return int(e.exit_code)
    except OpisError as e:
        if _DEBUG:
            raise
        fail(str(e))
        return ExitCode.USAGE
    except (KeyboardInterrupt, BrokenPipeError):
        return 130
    except typer.Abort:
        return 130
    except typer.TyperException as e:  # usage errors from the option parser
        if type(e).__name__ == "NoArgsIsHelpError":
            e.show()
            return ExitCode.USAGE
        if _DEBUG:
            raise
        fail(e.format_message())
        return ExitCode.USAGE
    except Exception as e:  # anything unexpected: still one line unless --debug
        if _DEBUG:
            raise
        fail(f"unexpected {type(e).__name__}: {e} (run again with --debug for a traceback)")
        return ExitCode.USAGE

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
