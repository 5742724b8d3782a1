"""The metrics registry (``opis_cli/metrics/registry.py``) against the real documents.

Every entry's path is read from a real result JSON (evaluated with groups and
the verification view) or a real comparison JSON, and holds the very number
the gate reads under that key; every gate metric, headline key and MLflow
name is an entry; the docs table is the registry's.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from data_gen import gaussian
from opis_cli import evaluate
from opis_cli.api import operating_point
from opis_cli.gate import rules
from opis_cli.gate.compare import Deployment, compare_results
from opis_cli.integrations.mlflow import evaluation_metrics
from opis_cli.metrics import registry

DOCS = Path(__file__).resolve().parents[1] / "docs" / "reference" / "metrics.md"


@pytest.fixture(scope="module")
def results():
    """Two small results with groups and the verification view, and the
    candidate's operating points at the baseline's threshold."""
    out = []
    for seed in (1, 2):
        x, y = gaussian(seed, n=1500, dim=8, n_classes=6)  # 1.9M negatives: FMR 1e-6
        groups = np.array(["u", "v", "w"], object)[np.arange(len(y)) % 3]
        r = evaluate(x, y, groups=list(groups), group_column="g", verification=True,
                     diagnose=seed == 1, timestamp=False)
        out.append((x, y, r))
    t = out[0][2].recommended_threshold.value
    points = [operating_point(x, y, t) for x, y, _ in out]
    return [r for _, _, r in out], Deployment(t, "baseline recommended", *points)


def _same(json_value, number) -> bool:
    if json_value is None:  # null in the document: NaN in the flat metrics
        return math.isnan(number)
    return json_value == number


def test_every_result_metric_is_at_its_path(results):
    (base, _), _ = results
    doc = json.loads(base.to_json())
    flat = {**base.gate_metrics(), "group_opis": base.groups.opis,
            "group_epsilon_opis": base.groups.epsilon_opis}
    entries = [m for m in registry.METRICS if m.document == "result"]
    assert {m.key for m in entries} == set(flat)
    for m in entries:
        assert _same(registry.lookup(doc, m), flat[m.key]), m.key


def test_every_deployment_metric_is_at_its_path_in_the_comparison(results):
    (base, cand), dep = results
    doc = json.loads(json.dumps(compare_results(base, cand, deployment=dep).to_dict()))
    flat = dep.metrics("candidate")
    entries = [m for m in registry.METRICS if m.document == "comparison"]
    assert {m.key for m in entries} == set(flat) == set(rules.DEPLOYMENT_METRICS)
    for m in entries:
        assert registry.lookup(doc, m) == flat[m.key], m.key


def test_every_gate_metric_is_an_entry_with_its_direction(results):
    (base, _), _ = results
    assert tuple(base.headline()) == rules.HEADLINE_METRICS == registry.keys("headline")
    assert set(base.fairness_metrics()) == set(rules.FAIRNESS_METRICS)
    assert tuple(base.verification_metrics()) == rules.VERIFICATION_METRICS
    assert set(rules.RULE_METRICS) == set(rules.DIRECTION) == set(registry.keys(
        *registry.RULE_FAMILIES))
    for k in rules.RULE_METRICS:
        assert rules.DIRECTION[k] == registry.BY_KEY[k].direction
    # SPEC's meaning, written out: lower OPIS, FAR and EER are better, higher recall
    assert [rules.DIRECTION[k] for k in ("opis", "epsilon_opis", "far", "eer", "recall_at_1",
                                         "map_at_r", "threshold")] == [-1, -1, -1, -1, 1, 1, 0]


def test_mlflow_names_are_the_tracked_entries(results):
    (base, _), _ = results
    got = evaluation_metrics(base)
    assert set(got) <= set(registry.keys(*registry.TRACKED_FAMILIES))
    assert {"opis", "group_opis", "eer", "garbe", "fnmr_at_fmr_1e-06"} <= set(got)
    assert got["group_opis"] == base.groups.opis and got["opis"] == base.opis


def test_unknown_family_is_refused():
    with pytest.raises(ValueError):
        registry.keys("nonsense")


def test_docs_table_is_the_registry():
    assert registry.markdown_table() in DOCS.read_text(encoding="utf-8")
