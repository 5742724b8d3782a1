"""Print what ``opis ... --mlflow`` logged: the latest run of an MLflow experiment, read back.

Uses MLflow's own client and configuration (``MLFLOW_TRACKING_URI``; MLflow's
default is ``sqlite:///mlflow.db`` in the working folder). Needs the
``mlflow`` extra::

    opis evaluate sample_data/digits_weak.parquet -q --mlflow-experiment digits
    python examples/mlflow_metrics.py digits
"""

from __future__ import annotations

import logging
import sys

from mlflow import MlflowClient

HEADLINE = ("opis", "epsilon_opis", "recall_at_1", "map_at_r", "threshold", "far", "tpr")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python examples/mlflow_metrics.py EXPERIMENT", file=sys.stderr)
        return 2
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # no store-creation INFO lines
    client = MlflowClient()
    experiment = client.get_experiment_by_name(args[0])
    if experiment is None:
        print(f"no experiment {args[0]!r} at {client.tracking_uri}", file=sys.stderr)
        return 1
    (run,) = client.search_runs([experiment.experiment_id], max_results=1,
                                order_by=["attributes.start_time DESC"])
    print(f"latest run of {args[0]!r}: {run.data.tags.get('opis.command')}, {run.info.status}")
    for name in HEADLINE:
        if name in run.data.metrics:
            print(f"  {name:13} {run.data.metrics[name]:.4f}")
    print(f"  ... {len(run.data.metrics)} metrics in all")
    params = run.data.params
    print("parameters:", ", ".join(f"{k}={params[k]}" for k in
                                   ("opis.metric", "opis.far_range", "opis.engine") if k in params))
    print("artifacts:", ", ".join(a.path for a in client.list_artifacts(run.info.run_id, "opis")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
