"""Fixtures shared by several test modules, and the ``slow`` marker.

pytest finds the fixtures here by name; test modules never import them.
Helpers that are plain functions or data live in modules that are not test
modules: ``reference.py`` (the naive reference), ``ref_compare.py`` (engine
vs reference), ``data_gen.py`` (seeded inputs), ``gating_samples.py``,
``report_helpers.py`` and ``result_docs.py``.

``slow`` marks the tests that need a browser, the ``dask``, ``train``,
``mlflow`` or ``lightning`` extras, or many seconds of CPU (see ``SLOW``). The full run (README,
``.ci/run``) runs every test; ``-m "not slow"`` is the quick subset that the
lowest-versions step of ``.ci/run`` runs with only the ``test`` extra.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from gating_samples import Samples, evaluate_samples
from report_helpers import render_big_report

# Hypothesis (tests/test_fuzz_*.py): "ci" (the default) is a fixed, derandomized
# budget so that CI runs are quick and reproducible; HYPOTHESIS_PROFILE=long
# explores more (and differently on every run) locally.
_FUZZ_COMMON = dict(deadline=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])
settings.register_profile("ci", max_examples=30, derandomize=True, **_FUZZ_COMMON)
settings.register_profile("long", max_examples=1000, **_FUZZ_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

#: test module -> the slow tests in it (None: all of them)
SLOW: dict[str, frozenset[str] | None] = {
    "test_report_browser.py": None,  # headless Chromium
    "test_report_drilldown.py": frozenset({  # Playwright + Chromium (the browser extra)
        "test_search_open_sort_click_hover_on_hostile_labels", "test_deep_link_opens_a_class",
        "test_the_10k_class_report"}),
    "test_engine_dask.py": None,  # the dask extra; a local cluster per module
    "test_dask_shards.py": None,  # the dask extra; workers reading Parquet shards
    "test_pml_agreement.py": None,  # the train extra (pytorch-metric-learning)
    "test_mlflow.py": None,  # the mlflow extra; a local SQLite tracking store
    "test_lightning.py": None,  # the lightning extra; real (tiny) fits
    "test_examples.py": frozenset({  # the train extra (torch), real training
        "test_hook_logs_opis_next_to_recall_and_keeps_the_mode",
        "test_training_is_seeded_and_tcm_changes_the_model",
        "test_example_end_to_end_smoke",
    }),
    "test_open_world_example.py": frozenset({  # the train extra (torch), real training
        "test_class_batches_show_every_row_once_with_positives",
        "test_example_end_to_end_is_deterministic",
        "test_the_documented_command_runs_from_the_repository_root",
    }),
    "test_report.py": frozenset({"test_ten_thousand_classes_report_stays_small"}),
    "test_engine_tiles.py": frozenset({"test_portable_kernels_give_the_same_json"}),  # 2 compiles
    # every example of the docs (about 45 s; the training-loop page needs torch and
    # lightning, the MLflow page and the README mlflow)
    "test_docs.py": frozenset({"test_examples_of_page_run"}),
    # the hf, lance, safetensors and hdf5 extras, and torch (train)
    "test_formats.py": frozenset({
        "test_hf_saved_dataset_and_its_arrow_file_match_parquet", "test_hf_dataset_dict_split",
        "test_hf_class_label_is_read_as_class_names", "test_hf_ragged_embeddings",
        "test_hf_missing_column", "test_lance_dataset_matches_parquet",
        "test_safetensors_matches_parquet_and_is_memory_mapped",
        "test_safetensors_keys_and_labels_file", "test_safetensors_wrong_dtype_and_nan",
        "test_pt_dict_matches_parquet_and_is_memory_mapped",
        "test_pt_single_tensor_with_labels_file",
        "test_pt_malicious_pickle_is_refused_and_never_runs",
        "test_hdf5_matches_parquet_mapped_or_not", "test_hdf5_wrong_dtype",
    }),
}

def pytest_collection_modifyitems(config, items):
    """Mark the tests listed in ``SLOW`` (the marker is declared in pyproject.toml)."""
    for item in items:
        name = getattr(item, "originalname", item.name)
        names = SLOW.get(item.path.name, frozenset())
        if names is None or name in names:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def samples(tmp_path_factory) -> Samples:
    """Both sample models evaluated once per session (JSON with bootstrap, curves)."""
    return evaluate_samples(tmp_path_factory.mktemp("gating_samples"))


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """A working folder that is its own repository root (no config above it is read)."""
    (tmp_path / ".git").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def big_report(tmp_path_factory):
    """The folder of ``opis report`` on the 10k-class result (rendered once per session)."""
    return render_big_report(tmp_path_factory.mktemp("big_report"))


@pytest.fixture(scope="module")
def client():
    """A local Dask cluster of two worker processes (one per test module)."""
    import distributed

    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
        env={"NUMBA_NUM_THREADS": "1"})
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()
