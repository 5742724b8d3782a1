"""Log opis numbers to an MLflow run: metrics, parameters and artifacts.

MLflow is imported only inside :func:`log_to_mlflow` and :func:`check_target`
(``pip install 'opis-cli[mlflow]'``). Where a run goes is MLflow's own
configuration, as for any MLflow client: ``MLFLOW_TRACKING_URI`` (MLflow 3
defaults to ``sqlite:///mlflow.db`` in the working folder),
``MLFLOW_EXPERIMENT_NAME`` or ``MLFLOW_EXPERIMENT_ID`` for a new run, and
``MLFLOW_RUN_ID`` to attach to an existing run; the ``experiment`` and
``run_id`` arguments override them.

Names are tracker-safe: MLflow refuses ``%`` and ``@`` in keys, so 10%-OPIS
is ``epsilon_opis``, R@1 ``recall_at_1`` and MAP@R ``map_at_r``, the keys of
the result JSON's headline that gate rules use too
(:func:`evaluation_metrics`, :func:`comparison_metrics`; the table is in
``docs/how-to/mlflow.md``). Parameters carry an ``opis.`` prefix so that they
never collide with a training run's own (``epsilon``, ``beta``, ``metric``).

Everything is checked before the tracking store is written: a bad key, a
non-finite value, a missing artifact, an unknown run or a parameter that the
run already holds with another value raises :class:`~opis_cli.errors.OpisError`
with one line, and nothing is logged. A run this module created is marked
``FINISHED`` when everything is logged (``FAILED`` if the store fails half
way); an attached run keeps its status.
"""

from __future__ import annotations

import math
import os
import posixpath
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, InputError

if TYPE_CHECKING:  # pragma: no cover
    from ..gate.compare import Comparison
    from ..results import EvaluationResult

#: The extra that installs MLflow, in the one-line error when it is missing.
INSTALL_HINT = "pip install 'opis-cli[mlflow]'"

#: Keys opis writes (metrics, parameters, tags, artifact paths): a subset of what
#: MLflow accepts on every platform (no ``:``, which Windows refuses), at most 250 long.
KEY = re.compile(r"^[A-Za-z0-9_\-. /]{1,250}$")

#: MLflow's longest parameter value.
MAX_PARAM_LENGTH = 6000

#: The prefix of every parameter opis logs.
PARAM_PREFIX = "opis."


# ---------------------------------------------------------------- names


def evaluation_metrics(result: EvaluationResult, prefix: str = "") -> dict[str, float]:
    """The headline numbers of a result under tracker-safe names.

    The keys are those of ``result.gate_metrics()`` (the headline and the
    fairness numbers of SPEC 13), plus ``group_opis`` and
    ``group_epsilon_opis`` when the result has a group block; numbers that are
    undefined (NaN, e.g. fairness on a result without it) are left out.

    Parameters
    ----------
    result : EvaluationResult
    prefix : str
        Put before every key (``"val_"``, ``"test/"``); must itself be safe.

    Returns
    -------
    dict of str to float
        ``opis``, ``epsilon_opis``, ``recall_at_1`` ... ``recall_at_8``,
        ``map_at_r``, ``r_precision``, ``threshold``, ``mean_utility``, ``worst_mean_utility``,
        ``tpr``, ``far``, ``frr``, ``fraction_far_above_2x``, ``fdr``,
        ``garbe``, ``far_ratio``, ``frr_ratio``, ``inequity_rate``,
        ``fdr_mean``, ``garbe_mean``, with ``--verification`` ``eer``,
        ``min_dcf``, ``fnmr_at_fmr_1e-01`` ... ``fnmr_at_fmr_1e-06`` (SPEC 14),
        and the group keys.
    """
    from ..metrics.registry import TRACKED_FAMILIES, keys

    values = dict(result.gate_metrics())
    if result.groups is not None:
        values["group_opis"] = result.groups.opis
        values["group_epsilon_opis"] = result.groups.epsilon_opis
    # the names: those of the metrics registry's tracked families
    tracked = set(keys(*TRACKED_FAMILIES))
    out = {k: v for k, v in values.items() if k in tracked}
    return _finite({prefix + k: v for k, v in out.items()})


def comparison_metrics(comparison: Comparison) -> dict[str, float]:
    """The numbers of ``opis compare`` under tracker-safe names.

    For every headline metric ``m`` of the comparison: ``m`` (the candidate's
    value), ``baseline_m`` and ``change_m`` (candidate minus baseline); and
    the deployment view's ``deployed_far``, ``deployed_tpr``,
    ``deployed_frr``, ``deployed_far_ratio`` of the candidate when it could
    be measured. NaN and infinite numbers are left out.
    """
    out: dict[str, float] = {}
    for m in comparison.metrics:
        out[m.name] = m.candidate
        out[f"baseline_{m.name}"] = m.baseline
        out[f"change_{m.name}"] = m.change
    if comparison.deployment is not None:
        out.update(comparison.deployment.metrics("candidate"))
    return _finite(out)


def calibration_metrics(result) -> dict[str, float]:
    """The numbers of ``opis calibrate`` (a :class:`~opis_cli.transfer.TransferResult`)
    under tracker-safe names.

    ``transfer_far_mean`` / ``_min`` / ``_max``, ``transfer_tpr_mean`` / ``_min`` /
    ``_max``, ``transfer_oracle_tpr_mean``, ``transfer_tpr_lost_mean`` and
    ``transfer_fraction_far_above_2x_mean`` over the folds; per fold ``k``:
    ``fold_k_threshold``, ``fold_k_far``, ``fold_k_tpr``,
    ``fold_k_oracle_threshold``; per compared calibration method (``:`` written
    ``_``, e.g. ``method_cluster_16_far_mean``): the means over folds of its
    ``opis``, ``epsilon_opis``, ``far``, ``tpr`` and
    ``fraction_far_above_2x``. NaN and infinite numbers are left out.
    """
    s = result.summary()
    out: dict[str, float] = {}
    for key in ("far", "tpr"):
        for stat in ("mean", "min", "max"):
            out[f"transfer_{key}_{stat}"] = s[key][stat]
    for key in ("oracle_tpr", "tpr_lost", "fraction_far_above_2x"):
        out[f"transfer_{key}_mean"] = s[key]["mean"]
    for f in result.folds:
        out[f"fold_{f.fold}_threshold"] = f.calibration.threshold
        out[f"fold_{f.fold}_far"] = f.test.far
        out[f"fold_{f.fold}_tpr"] = f.test.tpr
        out[f"fold_{f.fold}_oracle_threshold"] = f.test.oracle_threshold
    for name, v in (s.get("methods") or {}).items():
        safe = re.sub(r"[^A-Za-z0-9_]", "_", name)
        for key, stats in v.items():
            out[f"method_{safe}_{key}_mean"] = stats["mean"]
    return _finite(out)


def option_params(options: Mapping[str, Any]) -> dict[str, str]:
    """Options as MLflow parameters: ``opis.<name>`` -> text; None values left out.

    A pair (a range) is written ``A:B`` as on the command line; other values
    with ``str``.
    """
    out = {}
    for k, v in options.items():
        if v is None:
            continue
        if isinstance(v, (list, tuple)):
            v = ":".join(f"{x:g}" if isinstance(x, float) else str(x) for x in v)
        out[PARAM_PREFIX + k] = str(v)
    return out


def _finite(metrics: Mapping[str, float]) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        if v is not None and math.isfinite(float(v)):
            out[k] = float(v)
    return out


# ---------------------------------------------------------------- checks


def _check_key(key: str, what: str) -> None:
    if (not isinstance(key, str) or not KEY.match(key) or posixpath.normpath(key) != key
            or any(part in ("", ".", "..") for part in key.split("/"))):
        raise ConfigError(f"MLflow {what} name {key!r}: expected letters, digits, '_', '-', "
                          "'.', ' ' or '/' (no '%', '@' or ':'), at most 250, a plain "
                          "relative path")


def _check_inputs(metrics: Mapping[str, float], params: Mapping[str, str],
                  artifacts: Mapping[str, bytes | os.PathLike | str],
                  tags: Mapping[str, str]) -> None:
    for k, v in metrics.items():
        _check_key(k, "metric")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ConfigError(f"MLflow metric {k!r}: {v!r} is not a finite number")
    for what, mapping in (("parameter", params), ("tag", tags)):
        for k, v in mapping.items():
            _check_key(k, what)
            if not isinstance(v, str):
                raise ConfigError(f"MLflow {what} {k!r}: expected text, got {type(v).__name__}")
    for k, v in params.items():
        if len(v) > MAX_PARAM_LENGTH:
            raise ConfigError(f"MLflow parameter {k!r}: {len(v)} characters, MLflow keeps at "
                              f"most {MAX_PARAM_LENGTH}")
    for name, content in artifacts.items():
        _check_key(name, "artifact")
        if isinstance(content, (bytes, bytearray)):
            continue
        if not isinstance(content, (str, os.PathLike)):
            raise ConfigError(f"MLflow artifact {name!r}: expected bytes or a path, got "
                              f"{type(content).__name__}")
        if not Path(content).exists():
            raise InputError(f"MLflow artifact {name!r}: {content} does not exist")


def _import_mlflow():
    try:
        import mlflow  # noqa: F401
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException
    except ImportError:
        raise ConfigError(f"MLflow is not installed: {INSTALL_HINT}") from None
    return MlflowClient, MlflowException


@dataclass(frozen=True)
class Target:
    """Where :func:`log_to_mlflow` logs: an existing run, or a new run in an experiment.

    ``experiment_id`` is None when the experiment is to be created (a name
    that does not exist yet).
    """

    tracking_uri: str
    run_id: str | None
    experiment_name: str | None
    experiment_id: str | None


def check_target(experiment: str | None = None, run_id: str | None = None) -> Target:
    """Check, before any work, that MLflow is installed and the target exists.

    ``run_id`` (else ``MLFLOW_RUN_ID``) must name an existing run; an
    ``experiment`` given with it must be the run's. Without a run id the
    experiment is ``experiment``, else ``MLFLOW_EXPERIMENT_NAME``, else
    ``MLFLOW_EXPERIMENT_ID``, else MLflow's default experiment; a name that
    does not exist yet is created when the run is logged. Reads only.

    Raises
    ------
    ConfigError
        MLflow is missing (one line naming ``pip install 'opis-cli[mlflow]'``),
        or the run is not in ``experiment``.
    InputError
        No such run or experiment id, or the tracking store cannot be read.
    """
    MlflowClient, MlflowException = _import_mlflow()
    with _quiet_mlflow_logs():
        return _resolve(MlflowClient(), MlflowException, experiment,
                        run_id or os.environ.get("MLFLOW_RUN_ID") or None)


def _resolve(client, MlflowException, experiment: str | None, run_id: str | None) -> Target:
    uri = client.tracking_uri
    try:
        if run_id:
            try:
                run = client.get_run(run_id)
            except MlflowException:
                raise InputError(f"MLflow run {run_id!r} not found at {uri}") from None
            exp_id = run.info.experiment_id
            exp = client.get_experiment(exp_id)
            if experiment and exp.name != experiment:
                raise ConfigError(f"MLflow run {run_id!r} belongs to experiment {exp.name!r}, "
                                  f"not {experiment!r}")
            return Target(uri, run_id, exp.name, exp_id)
        name = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or None
        if name:
            exp = client.get_experiment_by_name(name)
            return Target(uri, None, name, exp.experiment_id if exp else None)
        exp_id = os.environ.get("MLFLOW_EXPERIMENT_ID") or "0"
        try:
            exp = client.get_experiment(exp_id)
        except MlflowException:
            raise InputError(f"MLflow experiment id {exp_id!r} not found at {uri}") from None
        return Target(uri, None, exp.name, exp.experiment_id)
    except MlflowException as e:
        raise InputError(f"MLflow tracking store {uri}: {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


@contextmanager
def _quiet_mlflow_logs() -> Iterator[None]:
    """Silence MLflow's and Alembic's INFO lines (store creation, migrations) on stderr."""
    import logging

    saved = []
    for name in ("mlflow", "alembic"):
        logger = logging.getLogger(name)
        saved.append((logger, logger.level))
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in saved:
            logger.setLevel(level)


def log_to_mlflow(
    metrics: Mapping[str, float],
    params: Mapping[str, str],
    artifacts: Mapping[str, bytes | os.PathLike | str] | None = None,
    *,
    experiment: str | None = None,
    run_id: str | None = None,
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
    step: int = 0,
) -> str:
    """Log metrics, parameters and artifacts to one MLflow run; return its run id.

    Parameters
    ----------
    metrics : mapping of str to float
        Finite numbers under safe keys (:func:`evaluation_metrics`).
    params : mapping of str to str
        Parameters (:func:`option_params`). Attached to a run that already
        holds one of them with another value, nothing is logged (MLflow
        parameters cannot change).
    artifacts : mapping of str to bytes or path
        Artifact path in the run (``"opis/result.json"``) to the content:
        bytes, a file, or a folder (logged with everything in it).
    experiment : str, optional
        Experiment name of a new run (created when missing); default
        ``MLFLOW_EXPERIMENT_NAME``, ``MLFLOW_EXPERIMENT_ID``, MLflow's
        default experiment.
    run_id : str, optional
        Attach to this existing run (e.g. the training run); default
        ``MLFLOW_RUN_ID``, else a new run.
    run_name : str, optional
        Name of a new run (an attached run keeps its name).
    tags : mapping of str to str, optional
        Tags of the run, new or attached.
    step : int
        The step of every metric (an epoch, for a training run).

    Returns
    -------
    str
        The run id.

    Raises
    ------
    OpisError
        Before anything is logged, for every problem :func:`check_target`
        finds and for bad keys or values; :class:`InputError` if the store
        fails while logging (a run created here is then marked ``FAILED``).
    """
    artifacts = dict(artifacts or {})
    tags = dict(tags or {})
    _check_inputs(metrics, params, artifacts, tags)
    target = check_target(experiment, run_id)
    MlflowClient, MlflowException = _import_mlflow()
    with _quiet_mlflow_logs():
        return _log(MlflowClient(), MlflowException, target, metrics, params, artifacts,
                    tags, run_name, step)


def _log(client, MlflowException, target: Target, metrics, params, artifacts, tags,
         run_name, step) -> str:
    from mlflow.entities import Metric, Param, RunTag

    try:
        with tempfile.TemporaryDirectory(prefix="opis-mlflow-") as tmp:
            # Everything that can fail on our side happens before the run is touched.
            _stage_artifacts(artifacts, Path(tmp))
            if target.run_id is not None:
                rid = target.run_id
                held = client.get_run(rid).data.params
                clash = sorted(k for k, v in params.items() if k in held and held[k] != v)
                if clash:
                    k = clash[0]
                    raise ConfigError(f"MLflow run {rid!r} already holds parameter {k!r} = "
                                      f"{held[k]!r}, not {params[k]!r}; log to a new run")
                created = False
            else:
                exp_id = target.experiment_id
                if exp_id is None:
                    exp_id = client.create_experiment(target.experiment_name)
                rid = client.create_run(exp_id, run_name=run_name).info.run_id
                created = True
            try:
                now = int(time.time() * 1000)
                batch_m = [Metric(k, float(v), now, step) for k, v in metrics.items()]
                batch_p = [Param(k, v) for k, v in params.items()]
                batch_t = [RunTag(k, v) for k, v in tags.items()]
                # MLflow's batch limits: 1000 metrics, 100 parameters and tags per call
                for i in range(0, max(len(batch_m), len(batch_p), len(batch_t)), 100):
                    client.log_batch(rid, metrics=batch_m[i:i + 100],
                                     params=batch_p[i:i + 100], tags=batch_t[i:i + 100])
                if artifacts:
                    client.log_artifacts(rid, tmp)
            except BaseException:
                if created:
                    try:
                        client.set_terminated(rid, "FAILED")
                    except Exception:  # the store is failing already; report the first error
                        pass
                raise
            if created:
                client.set_terminated(rid, "FINISHED")
            return rid
    except MlflowException as e:
        raise InputError(f"MLflow tracking store {target.tracking_uri}: {_first_line(e)}") \
            from None
    except OSError as e:
        raise InputError(f"MLflow artifacts of {target.tracking_uri}: {e}") from None


def _stage_artifacts(artifacts: Mapping[str, bytes | os.PathLike | str], root: Path) -> None:
    """Lay the artifacts out under ``root`` as they will appear in the run."""
    for name, content in artifacts.items():
        dest = root / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, (bytes, bytearray)):
            dest.write_bytes(bytes(content))
        elif Path(content).is_dir():
            shutil.copytree(content, dest, dirs_exist_ok=True)
        else:
            shutil.copyfile(content, dest)


def describe(run_id: str, target: Target | None = None) -> str:
    """One line for people: where the run was logged."""
    where = f" (experiment {target.experiment_name!r}) at {target.tracking_uri}" if target else ""
    return f"Logged to MLflow run {run_id}{where}"


__all__ = [
    "INSTALL_HINT",
    "Target",
    "check_target",
    "comparison_metrics",
    "describe",
    "evaluation_metrics",
    "log_to_mlflow",
    "option_params",
]
