"""``--mlflow`` of the commands: check the target before any work, log after the outputs.

The logic is :mod:`opis_cli.integrations.mlflow`; this module only gathers
what a command measured and wrote (the files the user asked for, else the
same outputs written to a temporary folder) and prints one line about the run.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import typer


def mlflow_target(mlflow: bool, experiment: str | None, run_id: str | None):
    """The checked target when ``--mlflow`` (or one of its options) is given, else None.

    Called before the inputs are read: MLflow missing, an unknown run or a
    run of another experiment stop the command with one line, exit 2.
    """
    if not (mlflow or experiment or run_id):
        return None
    from ..integrations.mlflow import check_target

    return check_target(experiment, run_id)


def _gate_tags(command: str, outcome) -> dict[str, str]:
    tags = {"opis.command": command}
    if outcome is not None:
        tags["opis.gate"] = "passed" if outcome.passed else "failed"
    return tags


def _log(target, metrics: dict, params: dict, artifacts: dict, tags: dict, quiet: bool) -> str:
    from ..integrations.mlflow import describe, log_to_mlflow

    run_id = log_to_mlflow(metrics, params, artifacts, experiment=target.experiment_name,
                           run_id=target.run_id, tags=tags)
    if not quiet:
        typer.echo(describe(run_id, target), err=True)
    return run_id


def log_evaluation(target, result, *, path: Path, json_text: str, json_out: str | None,
                   curves: Path | None, report: Path | None, outcome, quiet: bool) -> str:
    """Log one ``opis evaluate`` result: headline metrics, options, JSON, curves, report."""
    from ..integrations.mlflow import evaluation_metrics, option_params
    from ..io.output import staged

    params = option_params(result.options)
    prov = result.provenance
    params.update(option_params({"input": str(path), "engine": prov.get("engine"),
                                 "n_samples": result.n_samples, "dim": result.dim}))
    inputs = prov.get("inputs") or []
    if len(inputs) == 1 and inputs[0].get("sha256"):
        params["opis.input_sha256"] = inputs[0]["sha256"]
    with tempfile.TemporaryDirectory(prefix="opis-mlflow-") as tmp:
        artifacts: dict[str, Any] = {}
        if json_out and json_out != "-":
            artifacts["opis/result.json"] = Path(json_out)
        else:
            artifacts["opis/result.json"] = json_text.encode("utf-8")
        if curves is None:
            curves = Path(tmp) / "curves.parquet"
            with staged() as out:
                out.table(curves, result.curves_table())
        artifacts[f"opis/curves{curves.suffix.lower()}"] = curves
        if report is None:
            from ..render.report import write_report

            report = Path(tmp) / "report"
            write_report(result, report)
        artifacts["opis/report"] = report
        return _log(target, evaluation_metrics(result), params, artifacts,
                    _gate_tags("evaluate", outcome), quiet)


def log_comparison(target, cmp, base_result, cand_result, *, baseline: Path, candidate: Path,
                   json_out: str | None, report: Path | None, outcome, quiet: bool,
                   curves: tuple = (None, None)) -> str:
    """Log one ``opis compare``: candidate, baseline and change of each headline metric,
    the deployment view, the options, the comparison JSON (as ``--json`` writes it) and
    the report."""
    import json

    from ..integrations.mlflow import comparison_metrics, option_params

    doc = {"comparison": cmp.to_dict(), "gate": outcome.to_dict() if outcome else None}
    json_text = json.dumps(doc, indent=2, allow_nan=False) + "\n"

    params = option_params(cand_result.options)
    params.update(option_params({"baseline": str(baseline), "candidate": str(candidate),
                                 "mode": cmp.mode}))
    if cmp.deployment is not None:
        params.update(option_params({"deployed_threshold": repr(cmp.deployment.threshold)}))
    with tempfile.TemporaryDirectory(prefix="opis-mlflow-") as tmp:
        artifacts: dict[str, Any] = {}
        if json_out and json_out != "-":
            artifacts["opis/comparison.json"] = Path(json_out)
        else:
            artifacts["opis/comparison.json"] = json_text.encode("utf-8")
        if report is None:
            from ..render.report.compare import write_comparison_report

            report = Path(tmp) / "report"
            write_comparison_report(cmp, base_result, cand_result, report, outcome=outcome,
                                    base_curves=curves[0], cand_curves=curves[1])
        artifacts["opis/report"] = report
        return _log(target, comparison_metrics(cmp), params, artifacts,
                    _gate_tags("compare", outcome), quiet)


def log_calibration(target, result, *, path: str, json_text: str, json_out: str | None,
                    report: Path | None, quiet: bool) -> str:
    """Log one ``opis calibrate``: the transfer numbers per fold and over folds, each
    compared method, the options, the JSON and the report."""
    from ..integrations.mlflow import calibration_metrics, option_params

    params = option_params(result.options)
    params.update(option_params({"input": path, "n_samples": result.n_samples,
                                 "dim": result.dim}))
    with tempfile.TemporaryDirectory(prefix="opis-mlflow-") as tmp:
        artifacts: dict[str, Any] = {}
        if json_out and json_out != "-":
            artifacts["opis/calibrate.json"] = Path(json_out)
        else:
            artifacts["opis/calibrate.json"] = json_text.encode("utf-8")
        if report is None:
            from ..render.report.transfer import write_transfer_report

            report = Path(tmp) / "report"
            write_transfer_report(result, report, path)
        artifacts["opis/report"] = report
        return _log(target, calibration_metrics(result), params, artifacts,
                    {"opis.command": "calibrate"}, quiet)
