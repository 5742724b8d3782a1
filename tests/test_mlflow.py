"""``--mlflow`` and ``opis_cli.integrations.mlflow`` against a real local MLflow store.

Every test gets a fresh tracking store (SQLite in ``tmp_path``, artifacts in
``tmp_path``) selected the way a user selects one, with MLflow's own
environment variables, and reads the run back with ``MlflowClient``. The
expected numbers come from the result JSON ``opis`` wrote, never from the
module under test. Needs the ``mlflow`` extra (``slow`` in conftest.py:
the lowest-versions step installs only the ``test`` extra); mlflow is
imported inside the tests so that collecting this module never needs it.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from data_gen import gaussian

import opis_cli
from opis_cli.cli import main
from opis_cli.errors import ConfigError, InputError

EXPERIMENT = "opis-tests"
ROOT = Path(__file__).resolve().parents[1]
#: what every tracker takes: MLflow refuses '%' and '@', others dots or slashes
SAFE = re.compile(r"^[a-z][a-z0-9_]*$")


def _write(path: Path, seed: int, n: int = 120, groups: bool = False) -> Path:
    x, labels = gaussian(seed, n=n, dim=6, n_classes=5)
    cols = {"embedding": pa.array(list(x), type=pa.list_(pa.float32())), "label": labels}
    if groups:
        cols["group"] = [f"g{int(lab[1:]) % 3}" for lab in labels]
    pq.write_table(pa.table(cols), path)
    return path


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory) -> Path:
    """An SQLite store with MLflow's tables, made once (its migrations take seconds)."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow_template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def store(empty_store, tmp_path, monkeypatch):
    """A fresh SQLite tracking store with one experiment, selected by MLFLOW_TRACKING_URI."""
    import shutil

    import mlflow.tracking._tracking_service.utils as tracking
    from mlflow import MlflowClient

    for var in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID"):
        monkeypatch.delenv(var, raising=False)
    # no process-wide URI left by another test (mlflow.set_tracking_uri): the variable decides
    monkeypatch.setattr(tracking, "_tracking_uri", None)
    shutil.copyfile(empty_store, tmp_path / "mlflow.db")
    # a new experiment's artifacts go to ./mlruns of the folder the store is opened in
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(tracking_uri=uri)
    client.create_experiment(EXPERIMENT, artifact_location=(tmp_path / "artifacts").as_uri())
    return client


@pytest.fixture
def data(tmp_path):
    return _write(tmp_path / "emb.parquet", seed=3)


def cli(capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def runs(client, experiment: str = EXPERIMENT):
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id])


def artifact_paths(client, run_id: str, path: str = "opis") -> set[str]:
    return {a.path for a in client.list_artifacts(run_id, path)}


def download(client, run_id: str, path: str, dst: Path) -> Path:
    from mlflow.artifacts import download_artifacts

    return Path(download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(dst),
                                   tracking_uri=client.tracking_uri))


# ---------------------------------------------------------------- opis evaluate --mlflow


def test_evaluate_logs_the_json_numbers_options_and_artifacts(store, data, tmp_path, capsys):
    out = tmp_path / "result.json"
    code, stdout, err = cli(capsys, "evaluate", data, "--json", out, "--mlflow-experiment",
                            EXPERIMENT, "-q")
    assert (code, stdout, err) == (0, "", "")
    (run,) = runs(store)
    assert run.info.status == "FINISHED"
    doc = json.loads(out.read_text())
    m = run.data.metrics
    rt = doc["recommended_threshold"]
    expected = {
        "opis": doc["opis"], "epsilon_opis": doc["epsilon_opis"],
        "recall_at_1": doc["retrieval"]["recall_at_k"]["1"],
        "map_at_r": doc["retrieval"]["map_at_r"], "threshold": rt["value"],
        "far": rt["far"], "tpr": rt["tpr"], "mean_utility": rt["mean_utility"],
        "fdr": rt["fairness"]["fdr"], "garbe_mean": doc["fairness"]["garbe_mean"],
    }
    for key, value in expected.items():
        assert m[key] == value, key
    assert all(SAFE.match(k) for k in m)
    p = run.data.params
    assert p["opis.metric"] == "cosine" and p["opis.far_range"] == "0.01:0.1"
    assert p["opis.input"] == str(data) and p["opis.n_samples"] == "120"
    assert run.data.tags["opis.command"] == "evaluate"
    assert artifact_paths(store, run.info.run_id) == {
        "opis/result.json", "opis/curves.parquet", "opis/report"}
    assert "opis/report/report.html" in artifact_paths(store, run.info.run_id, "opis/report")
    logged = download(store, run.info.run_id, "opis/result.json", tmp_path / "dl")
    assert logged.read_bytes() == out.read_bytes()


def test_environment_selects_the_experiment_and_temp_outputs_leave_nothing(
        store, data, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "from-env")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    code, _, err = cli(capsys, "evaluate", data, "--mlflow", "--curves", "c.csv")
    assert sorted(p.name for p in (tmp_path / "mlruns").iterdir()) == ["2"]  # from-env's
    assert code == 0
    (run,) = runs(store, "from-env")  # created, since it did not exist
    assert err.strip().splitlines()[-1] == (
        f"Logged to MLflow run {run.info.run_id} (experiment 'from-env') at "
        f"{store.tracking_uri}")
    # no --json, no --report: written to a temporary folder, logged, removed
    assert sorted(p.name for p in work.iterdir()) == ["c.csv"]
    assert artifact_paths(store, run.info.run_id) == {
        "opis/result.json", "opis/curves.csv", "opis/report"}
    doc = json.loads(download(store, run.info.run_id, "opis/result.json", tmp_path / "dl")
                     .read_text())
    assert run.data.metrics["opis"] == doc["opis"]
    assert not runs(store)  # nothing in the other experiment


def test_attaches_to_an_existing_training_run(store, data, capsys):
    exp = store.get_experiment_by_name(EXPERIMENT)
    train = store.create_run(exp.experiment_id, run_name="training")
    rid = train.info.run_id
    store.log_param(rid, "lr", "0.001")
    store.log_metric(rid, "loss", 0.5, step=3)
    code, _, err = cli(capsys, "evaluate", data, "--mlflow-run-id", rid, "-q")
    assert (code, err) == (0, "")
    (run,) = runs(store)
    assert run.info.run_id == rid and run.info.status == "RUNNING"  # left as it was
    assert run.data.params["lr"] == "0.001" and run.data.metrics["loss"] == 0.5
    assert set(run.data.metrics) >= {"opis", "epsilon_opis", "recall_at_1", "map_at_r"}
    assert "opis/result.json" in artifact_paths(store, rid)


def test_unknown_run_id_is_one_line_exit_2_and_nothing_is_written(store, data, tmp_path,
                                                                   capsys):
    out = tmp_path / "r.json"
    code, stdout, err = cli(capsys, "evaluate", data, "--json", out, "--mlflow-run-id",
                            "0123456789abcdef0123456789abcdef")
    assert code == 2 and stdout == ""
    assert err == (f"Error: MLflow run '0123456789abcdef0123456789abcdef' not found at "
                   f"{store.tracking_uri}\n")
    assert not out.exists() and not runs(store)


def test_run_of_another_experiment_is_refused(store, data, capsys):
    other = store.create_experiment("other")
    rid = store.create_run(other).info.run_id
    code, _, err = cli(capsys, "evaluate", data, "--mlflow-run-id", rid,
                       "--mlflow-experiment", EXPERIMENT)
    assert code == 2 and err.count("\n") == 1
    assert f"belongs to experiment 'other', not '{EXPERIMENT}'" in err


def test_a_parameter_the_run_holds_with_another_value_logs_nothing(store, data, capsys):
    exp = store.get_experiment_by_name(EXPERIMENT)
    rid = store.create_run(exp.experiment_id).info.run_id
    store.log_param(rid, "opis.metric", "l2")
    code, _, err = cli(capsys, "evaluate", data, "--mlflow-run-id", rid, "-q")
    assert code == 2 and err.count("\n") == 1
    assert "already holds parameter 'opis.metric' = 'l2', not 'cosine'" in err
    run = store.get_run(rid)
    assert run.data.metrics == {} and set(run.data.params) == {"opis.metric"}
    assert not store.list_artifacts(rid)


def test_mlflow_missing_is_one_line_naming_the_extra(data, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow raises ImportError
    code, _, err = cli(capsys, "evaluate", data, "--mlflow")
    assert code == 2
    assert err == "Error: MLflow is not installed: pip install 'opis-cli[mlflow]'\n"


def test_gate_failure_is_logged_before_the_exit(store, data, capsys):
    code, _, _ = cli(capsys, "evaluate", data, "--max", "opis=0", "--mlflow-experiment",
                     EXPERIMENT, "-q")
    assert code == 1
    (run,) = runs(store)
    assert run.data.tags["opis.gate"] == "failed" and "opis" in run.data.metrics


# ---------------------------------------------------------------- opis compare --mlflow


def test_compare_logs_both_sides_the_change_and_the_deployment_view(store, tmp_path, capsys):
    base = _write(tmp_path / "base.parquet", seed=1)
    cand = _write(tmp_path / "cand.parquet", seed=2)
    out = tmp_path / "cmp.json"
    code, _, _ = cli(capsys, "compare", base, cand, "--json", out, "--mlflow-experiment",
                     EXPERIMENT, "-q")
    assert code == 0
    (run,) = runs(store)
    doc = json.loads(out.read_text())["comparison"]
    m = run.data.metrics
    for row in doc["metrics"]:
        name = row["metric"]
        for key, value in ((name, row["candidate"]), (f"baseline_{name}", row["baseline"]),
                           (f"change_{name}", row["change"])):
            if value is None:
                assert key not in m
            else:
                assert m[key] == value, key
    assert m["deployed_far"] == doc["deployment"]["candidate"]["far"]
    assert all(SAFE.match(k) for k in m)
    assert run.data.params["opis.candidate"] == str(cand)
    assert run.data.tags["opis.command"] == "compare"
    assert artifact_paths(store, run.info.run_id) == {"opis/comparison.json", "opis/report"}


# ---------------------------------------------------------------- the library function


@pytest.mark.parametrize("seed", range(6))
def test_every_metric_name_is_tracker_safe(seed):
    from opis_cli.integrations.mlflow import evaluation_metrics

    x, labels = gaussian(seed, n=90)
    groups = [f"g{i % 3}" for i in range(len(labels))] if seed % 2 else None
    policy = ("max-mean-utility", "far:0.05", "max-worst-utility")[seed % 3]
    result = opis_cli.evaluate(x, labels, groups=groups, threshold_policy=policy,
                               timestamp=False)
    names = evaluation_metrics(result)
    assert {"opis", "epsilon_opis", "recall_at_1", "map_at_r", "threshold", "far",
            "tpr"} <= set(names)
    assert ("group_opis" in names) == (groups is not None)
    for key, value in names.items():
        assert SAFE.match(key) and "%" not in key and "@" not in key, key
        assert math.isfinite(value)
    assert set(evaluation_metrics(result, prefix="val_")) == {f"val_{k}" for k in names}


def test_log_to_mlflow_logs_bytes_files_and_folders(store, tmp_path):
    from opis_cli.integrations.mlflow import log_to_mlflow

    folder = tmp_path / "fig"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"png")
    (tmp_path / "t.csv").write_text("x\n1\n")
    rid = log_to_mlflow({"opis": 0.25, "calibrated_far": 0.01}, {"opis.policy": "far:0.01"},
                        {"opis/x.json": b"{}", "opis/t.csv": tmp_path / "t.csv",
                         "opis/fig": folder},
                        experiment=EXPERIMENT, run_name="calibrate", step=2)
    run = store.get_run(rid)
    assert run.data.metrics == {"opis": 0.25, "calibrated_far": 0.01}
    assert run.data.params == {"opis.policy": "far:0.01"}
    assert run.info.run_name == "calibrate" and run.info.status == "FINISHED"
    assert [h.step for h in store.get_metric_history(rid, "opis")] == [2]
    assert artifact_paths(store, rid) == {"opis/x.json", "opis/t.csv", "opis/fig"}
    assert artifact_paths(store, rid, "opis/fig") == {"opis/fig/a.png"}


@pytest.mark.parametrize("metrics, params, artifacts, error", [
    ({"10%-opis": 0.1}, {}, {}, ConfigError),
    ({"r@1": 0.9}, {}, {}, ConfigError),
    ({"opis": float("nan")}, {}, {}, ConfigError),
    ({"opis": "0.1"}, {}, {}, ConfigError),
    ({}, {"opis.x": 3}, {}, ConfigError),
    ({}, {"opis.x": "y" * 6001}, {}, ConfigError),
    ({}, {}, {"../escape.json": b"{}"}, ConfigError),
    ({}, {}, {"opis/missing.json": Path("/nonexistent/x.json")}, InputError),
])
def test_bad_input_creates_no_run(store, metrics, params, artifacts, error):
    from opis_cli.integrations.mlflow import log_to_mlflow

    with pytest.raises(error) as info:
        log_to_mlflow(metrics, params, artifacts, experiment=EXPERIMENT)
    assert "\n" not in str(info.value)
    assert not runs(store)


def test_option_params_write_ranges_as_on_the_command_line():
    from opis_cli.integrations.mlflow import option_params

    assert option_params({"far_range": [0.01, 0.1], "calibration_range": None, "beta": 1.0,
                          "metric": "cosine"}) == {
        "opis.far_range": "0.01:0.1", "opis.beta": "1.0", "opis.metric": "cosine"}


# ---------------------------------------------------------------- opis calibrate --mlflow


def test_calibrate_logs_the_transfer_numbers_and_methods(store, tmp_path, capsys):
    from opis_cli.integrations.mlflow import calibration_metrics  # noqa: F401 (the mapping)

    data = ROOT / "sample_data" / "digits_strong.parquet"
    out = tmp_path / "cal.json"
    code, stdout, err = cli(capsys, "calibrate", data, "--folds", "3", "--method", "global",
                            "--method", "cluster:4", "--json", out, "--mlflow-experiment",
                            EXPERIMENT, "-q")
    assert (code, stdout, err) == (0, "", "")
    (run,) = runs(store)
    doc = json.loads(out.read_text())["transfer"]
    m = run.data.metrics
    assert m["transfer_far_mean"] == doc["summary"]["far"]["mean"]
    assert m["transfer_tpr_min"] == doc["summary"]["tpr"]["min"]
    for f in doc["folds"]:
        assert m[f"fold_{f['fold']}_threshold"] == f["calibration"]["threshold"]
        assert m[f"fold_{f['fold']}_far"] == f["test"]["far"]
    assert m["method_cluster_4_far_mean"] == doc["summary"]["methods"]["cluster:4"]["far"]["mean"]
    assert all(SAFE.match(k) for k in m)
    assert run.data.params["opis.target"] == "far:0.01"
    assert run.data.tags["opis.command"] == "calibrate"
    assert artifact_paths(store, run.info.run_id) == {"opis/calibrate.json", "opis/report"}
