"""Tests of the many-class open-world example (``python -m examples.open_world``).

The split, the tables and the scoring of one model are tested without torch.
The last tests train for real (a tiny configuration: a few classes, one
seed, one epoch) and need the ``train`` extra: slow (deselected by the quick suite), skipped with
that reason when torch is missing, and a failure under ``.ci/run --no-skips``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

import opis_cli
from opis_cli.api import operating_point
from opis_cli.calibration import fit
from opis_cli.transfer import fold_of
from open_world import data, scoring, table  # examples/ is on pythonpath (pyproject.toml)
from open_world.scoring import ArmScore

REPO = Path(__file__).resolve().parents[1]
TINY = ["--seeds", "1", "--epochs", "1", "--train-classes", "60", "--test-classes", "30",
        "--clusters", "4"]


@pytest.fixture(scope="module")
def wordnet():
    return data.load_wordnet()


@pytest.fixture(scope="module")
def tiny(wordnet):
    return data.open_world_split(*wordnet, max_train_classes=60, max_test_classes=30)


# --- data split -------------------------------------------------------------


def test_the_sample_is_the_many_class_one(wordnet):
    x, y = wordnet
    assert x.shape == (8047, 256) and x.dtype == np.float32
    assert len(set(y.tolist())) == 1300
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=2e-3)


def test_split_is_spec12_fold_zero_and_keeps_every_row(wordnet):
    x, y = wordnet
    s = data.open_world_split(x, y)
    fold = fold_of(y.tolist(), 5, 0)
    assert set(s.y_test.tolist()) == {c for c, f in fold.items() if f == 0}
    assert set(s.y_train.tolist()) == {c for c, f in fold.items() if f != 0}
    assert (s.train_classes, s.test_classes) == (1040, 260)
    assert len(s.y_train) + len(s.y_test) == len(y)
    assert s.x_train.shape == (len(s.y_train), 256) and s.x_test.shape == (len(s.y_test), 256)


def test_split_subsets_are_the_first_classes_in_spec12_order(wordnet, tiny):
    x, y = wordnet
    fold = fold_of(y.tolist(), 5, 0)
    order = sorted(fold, key=lambda n: (zlib.crc32(f"0:{n}".encode()), n))
    assert set(tiny.y_test.tolist()) == set([n for n in order if fold[n] == 0][:30])
    assert set(tiny.y_train.tolist()) == set([n for n in order if fold[n] != 0][:60])
    assert not set(tiny.y_train.tolist()) & set(tiny.y_test.tolist())
    # rows keep their file order
    rows = np.flatnonzero(np.isin(y, tiny.y_test))
    np.testing.assert_array_equal(tiny.x_test, x[rows])


def test_split_rejects_a_bad_fold(wordnet):
    with pytest.raises(ValueError, match="test_fold"):
        data.open_world_split(*wordnet, folds=5, test_fold=5)


# --- scoring one model (no torch) ---------------------------------------------


def test_score_plain_is_evaluate_and_the_training_side_threshold(tiny):
    s = scoring.score_plain("base", 3, tiny.x_train, tiny.y_train, tiny.x_test, tiny.y_test)
    r = opis_cli.evaluate(tiny.x_test, tiny.y_test, timestamp=False)
    theta = fit(tiny.x_train, tiny.y_train, method="global", target="far:0.01").global_threshold
    point = operating_point(tiny.x_test, tiny.y_test, theta)
    assert (s.arm, s.seed) == ("base", 3)
    assert (s.opis, s.epsilon_opis, s.recall_at_1) == (
        r.opis, r.epsilon_opis, r.retrieval.recall_at_k["1"])
    assert s.threshold == theta
    assert s.far == pytest.approx(point.far, abs=1e-12)
    assert s.tpr == pytest.approx(point.tpr, abs=1e-12)


def test_score_cluster_applies_the_calibration_fitted_on_the_training_rows(tiny):
    s = scoring.score_cluster("base+cluster", 1, tiny.x_train, tiny.y_train, tiny.x_test,
                              tiny.y_test, clusters=4)
    cal = fit(tiny.x_train, tiny.y_train, method="cluster:4", target="far:0.01", seed=1)
    assert s.threshold == cal.global_threshold
    # The achieved FAR is that of the adjusted distances d' = d - a_q - b_g of
    # the unseen rows at the global threshold (the deployment API, directly).
    accept = cal.accept(tiny.x_test, tiny.x_test)
    neg = tiny.y_test[:, None] != tiny.y_test[None, :]
    assert s.far == pytest.approx(accept[neg].mean(), abs=1e-12)
    plain = scoring.score_plain("base", 1, tiny.x_train, tiny.y_train, tiny.x_test, tiny.y_test)
    assert s.opis != plain.opis  # the offsets changed the distances


# --- the tables ----------------------------------------------------------------


def _score(arm, seed, opis, r1=0.5, far=0.01):
    return ArmScore(arm, seed, opis, 2 * opis, r1, far, 0.6, 0.7)


# base: OPIS 0.01 / 0.03; base+tcm 0.005 / 0.035; FAR 2% / 1.2% vs 1.5% / 1.5%.
SCORES = [
    _score("base", 0, 0.01, 0.5, 0.02), _score("base", 1, 0.03, 0.7, 0.012),
    _score("base+tcm", 0, 0.005, 0.6, 0.015), _score("base+tcm", 1, 0.035, 0.6, 0.015),
    _score("frozen", 0, 0.02), _score("frozen", 1, 0.02),
]


def test_results_table_rows_and_numbers():
    lines = table.results_table(SCORES).strip().split("\n")
    assert lines[0] == ("| arm | seeds | OPIS | 10%-OPIS | R@1 | FAR % (target 1%) | TPR % |")
    assert lines[1] == "|---|---|---|---|---|---|---|"
    assert lines[2] == ("| frozen embeddings, no head | 2 | 0.0200 ± 0.0000 | 0.0400 ± 0.0000 "
                        "| 0.500 ± 0.000 | 1.00 ± 0.00 | 60.0 ± 0.0 |")
    # OPIS 0.02 ± sqrt(0.0002) = 0.0141; R@1 0.6 ± 0.141; FAR 1.6% ± 0.566%
    assert lines[3] == ("| Multi-Similarity (base) | 2 | 0.0200 ± 0.0141 | 0.0400 ± 0.0283 "
                        "| 0.600 ± 0.141 | 1.60 ± 0.57 | 60.0 ± 0.0 |")
    assert lines[4].startswith("| base + TCM | 2 | 0.0200 ± 0.0212 |")
    assert len(lines) == 5


def test_paired_table_deltas_and_counts():
    lines = table.paired_table(SCORES).strip().split("\n")
    assert lines[0].startswith("| arm | vs | seeds | Δ OPIS |")
    # TCM - base: OPIS -0.005, +0.005; R@1 +0.1, -0.1; |FAR - 1%|: 0.5 < 1.0, 0.5 > 0.2.
    assert lines[2] == ("| base + TCM | Multi-Similarity (base) | 2 | +0.0000 ± 0.0071 | "
                        "+0.0000 ± 0.0141 | +0.000 ± 0.141 | 1/2 | 1/2 | 1/2 | 1/2 |")
    assert lines[3].startswith("| Multi-Similarity (base) | frozen embeddings, no head | 2 |")
    assert len(lines) == 4  # no cluster arms here


def test_scores_json_in_table_order():
    rows = json.loads(table.scores_json(SCORES))
    assert [(r["arm"], r["seed"]) for r in rows] == [
        ("frozen", 0), ("frozen", 1), ("base", 0), ("base", 1), ("base+tcm", 0), ("base+tcm", 1)]
    assert ArmScore(**rows[2]) == SCORES[0]


# --- training (needs the train extra: fails, never skips, without it) ---------


def test_class_batches_show_every_row_once_with_positives():
    import torch

    from open_world.training import class_batches

    y = np.repeat(np.arange(7), [3, 5, 9, 2, 4, 6, 1])
    batches = class_batches(y, 4, 10, torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(np.sort(np.concatenate(batches)), np.arange(len(y)))
    for b in batches:
        counts = np.bincount(y[b], minlength=7)
        assert ((counts == 0) | (counts >= 2) | (np.arange(7) == 6)).all()  # class 6 has 1 row
    again = class_batches(y, 4, 10, torch.Generator().manual_seed(0))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))


def test_example_end_to_end_is_deterministic(tmp_path, capsys):
    from open_world.__main__ import main

    assert main(TINY + ["--scores", str(tmp_path / "a.json")]) == 0
    first = capsys.readouterr()
    assert main(TINY + ["--scores", str(tmp_path / "b.json")]) == 0
    second = capsys.readouterr()
    assert first.out == second.out  # same seed, same numbers
    assert (tmp_path / "a.json").read_text() == (tmp_path / "b.json").read_text()
    lines = first.out.split("\n")
    assert lines[0].startswith("Unseen classes: 30 WordNet concepts (")
    rows = [ln for ln in lines if ln.startswith("| ") and not ln.startswith("| arm")]
    arms = [r.split(" | ")[0][2:] for r in rows]
    assert arms[:6] == list(table.ARMS.values())
    assert all(r.count(" ± ") == 5 and r.split(" | ")[1] == "1" for r in rows[:6])
    assert len(rows) == 6 + len(table.PAIRS)
    scores = json.loads((tmp_path / "a.json").read_text())
    assert [s["arm"] for s in scores] == list(table.ARMS)
    by = {s["arm"]: s for s in scores}
    assert by["base+tcm"]["opis"] != by["base"]["opis"]  # TCM changed the model
    assert by["base+cluster"]["opis"] != by["base"]["opis"]  # the calibration was applied
    # theta_G = t_A(F) on the same training-side distances, with or without offsets
    assert by["base+cluster"]["threshold"] == by["base"]["threshold"]
    assert all(0.0 <= s[k] <= 1.0 for s in scores for k in ("opis", "recall_at_1", "far", "tpr"))
    assert "wall time:" in first.err


def test_the_documented_command_runs_from_the_repository_root():
    env = {**os.environ, "PYTHONPATH": ""}
    out = subprocess.run([sys.executable, "-m", "examples.open_world", "--help"], cwd=REPO,
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: python -m examples.open_world")
