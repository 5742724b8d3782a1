"""Tests of the TCM-on-digits example (``examples/train_tcm_digits.py``, ``examples/tcm_digits``).

The plumbing (class split, Parquet export, scoring, results tables, the
unit-circle picture) is tested without torch. The last tests train for real
(one epoch, tiny) and need the ``train`` extra: slow (deselected by the quick suite), skipped with
that reason when torch is missing, and a failure under ``.ci/run --no-skips``.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import opis_cli
from np_compat import trapezoid
from opis_cli.io import read_dataset
from tcm_digits import data, figure, results  # examples/ is on pythonpath (pyproject.toml)
from tcm_digits.results import RunScore


# --- data split -------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    """scikit-learn's bundled digits (the peers extra; the train extra has it too)."""
    pytest.importorskip("sklearn",
                        reason="needs the optional extra(s) peers: pip install '.[peers]'")
    return data.load_digits_arrays()


def test_digits_are_the_bundled_sklearn_set(digits):
    x, y = digits
    assert x.shape == (1797, 64) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert sorted(set(y.tolist())) == list(range(10))


def test_open_world_split_has_disjoint_classes_and_keeps_every_image(digits):
    x, y = digits
    s = data.open_world_split(x, y)
    train_set = set(s.y_train.tolist()) | set(s.y_val.tolist())
    test_set = set(s.y_test.tolist())
    assert train_set == set(data.TRAIN_CLASSES)
    assert test_set == set(data.TEST_CLASSES)
    assert not train_set & test_set
    for c in data.TRAIN_CLASSES:
        n_c = int(np.sum(y == c))
        n_val = int(np.sum(s.y_val == c))
        assert n_val == round(0.2 * n_c)
        assert int(np.sum(s.y_train == c)) + n_val == n_c
    assert len(s.y_test) == int(np.isin(y, data.TEST_CLASSES).sum())
    # Train and validation images are different images (rows of x are unique
    # except for true duplicates, so compare as multisets of row bytes).
    rows = lambda a: sorted(r.tobytes() for r in a)  # noqa: E731
    all_train = rows(x[np.isin(y, data.TRAIN_CLASSES)])
    assert rows(np.concatenate([s.x_train, s.x_val])) == all_train
    assert s.x_test.shape == (len(s.y_test), 64)


def test_open_world_split_is_seeded(digits):
    x, y = digits
    a, b = data.open_world_split(x, y, seed=3), data.open_world_split(x, y, seed=3)
    c = data.open_world_split(x, y, seed=4)
    np.testing.assert_array_equal(a.x_val, b.x_val)
    assert not np.array_equal(a.x_val, c.x_val)


def test_open_world_split_custom_classes(digits):
    x, y = digits
    s = data.open_world_split(x, y, train_classes=[1, 7], test_classes=[2, 3, 4], val_fraction=0.0)
    assert set(s.y_train.tolist()) == {1, 7} and len(s.y_val) == 0
    assert set(s.y_test.tolist()) == {2, 3, 4}


@pytest.mark.parametrize("kwargs, message", [
    ({"train_classes": [0, 1, 2], "test_classes": [2, 3]}, "overlap: [2]"),
    ({"train_classes": [], "test_classes": [2, 3]}, "at least one"),
    ({"train_classes": [0], "test_classes": [11]}, "no images of class(es) [11]"),
    ({"val_fraction": 1.0}, "val_fraction"),
])
def test_open_world_split_rejects_bad_class_sets(digits, kwargs, message):
    x, y = digits
    with pytest.raises(ValueError) as err:
        data.open_world_split(x, y, **kwargs)
    assert message in str(err.value)


def test_label_strings():
    assert data.label_strings(np.array([5, 0])) == ["digit_5", "digit_0"]


# --- Parquet export and scoring ------------------------------------------------


def test_write_embeddings_round_trips_through_read_dataset(tmp_path):
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(7, 3))
    labels = ["digit_5", "digit_6", "digit_5", "digit_7", "digit_6", "digit_7", "digit_5"]
    path = tmp_path / "run.parquet"
    results.write_embeddings(path, emb, labels)
    schema = pq.read_schema(path)
    assert schema.field("embedding").type == pa.list_(pa.float32(), 3)
    assert schema.field("label").type == pa.string()
    ds = read_dataset(path)
    np.testing.assert_array_equal(ds.embeddings, emb.astype(np.float32))
    assert list(ds.labels) == labels
    assert ds.is_query is None and ds.is_gallery is None
    assert [f for f in os.listdir(tmp_path)] == ["run.parquet"]  # no temp file left behind


def test_write_embeddings_rejects_mismatch_without_writing(tmp_path):
    path = tmp_path / "bad.parquet"
    with pytest.raises(ValueError, match="for 3 labels"):
        results.write_embeddings(path, np.zeros((2, 4)), ["a", "b", "c"])
    assert not path.exists()


def test_score_file_equals_evaluate_on_the_same_arrays(tmp_path):
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(4, 8))
    y = np.repeat(np.arange(4), 15)
    emb = (centres[y] + 0.7 * rng.normal(size=(len(y), 8))).astype(np.float32)
    labels = [f"digit_{v}" for v in y]
    path = tmp_path / "ms-tcm-seed2.parquet"
    results.write_embeddings(path, emb, labels)
    score = results.score_file(path, "ms", True, 2)
    direct = opis_cli.evaluate(emb, labels, timestamp=False)
    assert (score.loss, score.tcm, score.seed) == ("ms", True, 2)
    assert score.opis == direct.opis
    assert score.epsilon_opis == direct.epsilon_opis
    assert score.recall_at_1 == direct.retrieval.recall_at_k["1"]
    assert 0.0 < score.opis and 0.0 < score.recall_at_1 <= 1.0


def test_run_name():
    assert results.run_name("arcface", False, 0) == "arcface-seed0"
    assert results.run_name("ms", True, 12) == "ms-tcm-seed12"


# --- results tables ----------------------------------------------------------

# R@1 0.8 / 1.0 -> mean 0.9, sample std sqrt(0.02) = 0.1414...
# OPIS 0.01 / 0.03 -> 0.02 ± 0.0141...; 10%-OPIS 0.05 / 0.05 -> 0.05 ± 0.
SCORES = [
    RunScore("ms", False, 0, 0.8, 0.01, 0.05),
    RunScore("ms", False, 1, 1.0, 0.03, 0.05),
    RunScore("ms", True, 0, 0.9, 0.005, 0.04),
    RunScore("ms", True, 1, 0.9, 0.035, 0.02),
    RunScore("arcface", False, 0, 0.5, 0.2, 0.3),
]


def test_mean_std_uses_sample_std():
    assert results.mean_std([0.8, 1.0]) == pytest.approx((0.9, math.sqrt(0.02)))
    assert results.mean_std([0.25]) == (0.25, 0.0)
    with pytest.raises(ValueError):
        results.mean_std([])


def test_results_table_rows_and_numbers():
    table = results.results_table(SCORES)
    lines = table.strip().split("\n")
    assert lines[0] == "| base loss | TCM | seeds | R@1 | OPIS | 10%-OPIS |"
    assert lines[1] == "|---|---|---|---|---|---|"
    # ArcFace first (table order), and only the configuration that exists.
    assert lines[2] == "| ArcFace | no | 1 | 0.500 ± 0.000 | 0.2000 ± 0.0000 | 0.3000 ± 0.0000 |"
    assert lines[3] == ("| Multi-Similarity | no | 2 | 0.900 ± 0.141 | 0.0200 ± 0.0141 | "
                        "0.0500 ± 0.0000 |")
    assert lines[4] == ("| Multi-Similarity | yes | 2 | 0.900 ± 0.000 | 0.0200 ± 0.0212 | "
                        "0.0300 ± 0.0141 |")
    assert len(lines) == 5


def test_paired_table_deltas_and_counts():
    lines = results.paired_table(SCORES).strip().split("\n")
    assert lines[0].startswith("| base loss | pairs | Δ R@1 | Δ OPIS | Δ 10%-OPIS |")
    # ms seed 0: ΔR@1 +0.1, ΔOPIS -0.005, Δeps -0.01; seed 1: -0.1, +0.005, -0.03.
    # Means 0, 0, -0.02; sample stds 0.1414, 0.00707, 0.01414.
    assert lines[2] == ("| Multi-Similarity | 2 | +0.000 ± 0.141 | +0.0000 ± 0.0071 | "
                        "-0.0200 ± 0.0141 | 1/2 | 1/2 | 2/2 |")
    assert len(lines) == 3  # ArcFace has no TCM run to pair with


def test_scores_json_is_sorted_and_round_trips():
    rows = json.loads(results.scores_json(SCORES))
    assert [(r["loss"], r["tcm"], r["seed"]) for r in rows] == [
        ("arcface", False, 0), ("ms", False, 0), ("ms", False, 1), ("ms", True, 0), ("ms", True, 1)]
    assert RunScore(**rows[-1]) == SCORES[3]


# --- the unit-circle picture --------------------------------------------------


def test_angles_of_known_points():
    emb = np.array([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0], [0.0, -1.0]])
    np.testing.assert_allclose(figure.angles_of(emb), [0.0, np.pi / 2, np.pi, -np.pi / 2])
    with pytest.raises(ValueError, match="N, 2"):
        figure.angles_of(np.zeros((3, 3)))


def test_circular_kde_integrates_to_one_and_wraps():
    grid = np.linspace(-np.pi, np.pi, 4001)
    d = figure.circular_kde(np.array([np.pi - 0.01, 0.5]), grid, 0.1)
    assert trapezoid(d, grid) == pytest.approx(1.0, abs=1e-6)
    # A point just below +pi has its mass on both ends of the grid.
    assert d[0] == pytest.approx(d[-1])
    assert d[0] > 0.5 * d.max()


def test_density_figure_draws_one_band_per_class_and_panel():
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    tight = {"digit_0": rng.normal(0.0, 0.05, 50), "digit_1": rng.normal(2.0, 0.05, 50)}
    loose = {"digit_0": rng.normal(0.0, 0.5, 50), "digit_1": rng.normal(2.0, 0.5, 50)}
    unseen = {"digit_5": rng.normal(1.0, 0.3, 30)}
    fig = figure.density_figure(
        [[figure.Panel("A", loose), figure.Panel("B", tight)], [figure.Panel("C", unseen)]],
        row_titles=["seen", "unseen"], suptitle="S")
    try:
        axes = fig.axes
        assert len(axes) == 4 and not axes[3].get_visible()
        assert [ax.get_title() for ax in axes[:3]] == ["A", "B", "C"]
        assert all(ax.name == "polar" for ax in axes)
        bands = {ax.get_title(): {ln.get_label(): ln for ln in ax.get_lines()
                                  if ln.get_label().startswith("digit")} for ax in axes[:3]}
        assert sorted(bands["A"]) == ["digit_0", "digit_1"] and sorted(bands["C"]) == ["digit_5"]
        # One radial scale per row: the tight panel reaches higher than the loose one,
        # and the tallest band of each row stands the same height over the circle.
        peak = lambda ln: float(np.max(ln.get_ydata()))  # noqa: E731
        assert peak(bands["B"]["digit_0"]) > peak(bands["A"]["digit_0"]) + 0.3
        tallest_row0 = max(peak(ln) for t in "AB" for ln in bands[t].values())
        assert tallest_row0 == pytest.approx(peak(bands["C"]["digit_5"]))
        assert axes[0].get_legend().get_title().get_text() == "seen"
        assert fig._suptitle.get_text() == "S"
    finally:
        plt.close(fig)


def test_save_density_figure_writes_a_png(tmp_path):
    path = tmp_path / "d.png"
    figure.save_density_figure(path, [[figure.Panel("x", {"a": np.array([0.0, 0.1])})]])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- training (needs the train extra: fails, never skips, without it) ---------


def test_hook_logs_opis_next_to_recall_and_keeps_the_mode():
    import torch

    from tcm_digits.hook import log_opis

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.Dropout(0.5))
    model.train()
    x = torch.randn(40, 6)
    labels = [f"c{i % 4}" for i in range(40)]
    lines: list[str] = []
    result = log_opis(model, x, labels, epoch=7, log=lines.append)
    assert model.training
    model.eval()
    with torch.no_grad():
        expected = opis_cli.evaluate(model(x).numpy(), labels, timestamp=False)
    assert result.opis == expected.opis  # evaluated in eval mode (dropout off)
    assert result.retrieval.recall_at_k["1"] == expected.retrieval.recall_at_k["1"]
    assert lines == [f"epoch   7  R@1 {expected.retrieval.recall_at_k['1']:.4f}  "
                     f"OPIS {expected.opis:.5f}  10%-OPIS {expected.epsilon_opis:.5f}"]


def test_training_is_seeded_and_tcm_changes_the_model(digits):
    from dataclasses import replace

    from tcm_digits import training

    x, y = digits
    split = data.open_world_split(x, y)
    cfg = replace(training.TrainConfig(), epochs=1, dim=8)
    a, hist = training.train(split, "ms", True, 0, cfg)
    b, _ = training.train(split, "ms", True, 0, cfg)
    c, _ = training.train(split, "ms", False, 0, cfg)
    ea, eb, ec = (training.embed(m, split.x_test[:50]) for m in (a, b, c))
    np.testing.assert_array_equal(ea, eb)
    assert not np.allclose(ea, ec)
    np.testing.assert_allclose(np.linalg.norm(ea, axis=1), 1.0, rtol=1e-5)
    assert len(hist) == 1 and set(hist[0]) == {"epoch", "recall_at_1", "opis", "epsilon_opis"}
    with pytest.raises(ValueError, match="unknown base loss"):
        training.make_loss("triplet", False, 5, cfg)


def test_example_end_to_end_smoke(tmp_path, capsys):
    import torch  # noqa: F401  (the train extra must be installed)

    import train_tcm_digits

    out = tmp_path / "run"
    fig = tmp_path / "fig.png"
    code = train_tcm_digits.main(["--out", str(out), "--seeds", "1", "--epochs", "1",
                                  "--toy-epochs", "1", "--figure", str(fig)])
    assert code == 0
    printed = capsys.readouterr()
    names = ["arcface-seed0", "arcface-tcm-seed0", "ms-seed0", "ms-tcm-seed0"]
    for name in names:
        ds = read_dataset(out / "embeddings" / f"{name}.parquet")
        assert ds.dim == 32 and ds.n_samples == 896
        assert sorted(set(ds.labels)) == [f"digit_{d}" for d in data.TEST_CLASSES]
    scores = json.loads((out / "scores.json").read_text())
    assert len(scores) == 4
    assert all(math.isfinite(s[k]) for s in scores for k in ("recall_at_1", "opis", "epsilon_opis"))
    table = (out / "results.md").read_text()
    assert table == printed.out
    assert table.count("| ArcFace |") == 3 and table.count("| Multi-Similarity |") == 3
    history = json.loads((out / "history.json").read_text())
    assert sorted(history) == sorted(names) and all(len(h) == 1 for h in history.values())
    assert fig.read_bytes()[:4] == b"\x89PNG"
    assert "wall time:" in printed.err and "toy 2-D with TCM" in printed.err
