"""Fixtures shared by several test modules, the ``slow`` marker and the extras.

pytest finds the fixtures here by name; test modules never import them.
Helpers that are plain functions or data live in modules that are not test
modules: ``reference.py`` (the naive reference), ``ref_compare.py`` (engine
vs reference), ``data_gen.py`` (seeded inputs), ``gating_samples.py``,
``report_helpers.py`` and ``result_docs.py``.

Two suites (README, docs/development.md):

* ``python -m pytest -q -n auto`` (the README's Quickstart 2, after ``pip
  install '.[test]'``; ``-n auto``: pytest-xdist, a worker per core): the
  core suite. The tests listed in ``SLOW`` (a browser, the
  ``dask``/``train``/``mlflow``/``lightning`` extras, many seconds of CPU) are
  deselected; a test whose optional extra (``NEEDS``) is not installed is
  skipped with a reason naming the extra.
* ``python -m pytest -q --slow --no-skips`` (``.ci/run``, every extra
  installed): every test, and a skip is a failure, so nothing needing an
  extra can silently not run.
"""

from __future__ import annotations

import os

# the exact engine's small-input route (engines/exact.py, small_route) off for
# the whole session, CLI subprocesses included: every test of the exact engine
# exercises the compiled kernels; tests/test_small_route.py turns it on.
# Set before anything imports the engine (the variable is read once)
os.environ["_OPIS_SMALL_TERMS"] = "0"


# (the xdist workers share numba's cache: the kernels compile under its lock,
# _numba_cache.compile_lock, so one worker compiles and the other loads)

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

from gating_samples import Samples, evaluate_samples  # noqa: E402
from report_helpers import render_big_report  # noqa: E402

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
    "test_faults.py": frozenset({  # the dask extra; a local cluster
        "test_dask_worker_killed_mid_pass_same_json",
        "test_dask_every_worker_killed_is_one_line_and_no_file",
        "test_dask_shards_worker_killed_mid_pass_same_json",
        "test_dask_shards_no_worker_left_is_one_line_and_no_file"}),
    "test_report_drilldown.py": frozenset({  # Playwright + Chromium (the browser extra)
        "test_search_open_sort_click_hover_on_hostile_labels", "test_deep_link_opens_a_class",
        "test_the_10k_class_report"}),
    "test_engine_dask.py": None,  # the dask extra; a local cluster per module
    "test_dask_shards.py": None,  # the dask extra; workers reading Parquet shards
    "test_diagnosis_dask.py": None,  # the dask extra; SPEC 16 on a local cluster
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
    "test_report_layout.py": frozenset({  # Playwright + Chromium (the browser extra)
        "test_numbers_and_labels_do_not_wrap_inside_a_token",
        "test_the_line_count_sees_a_wrapped_cell"}),
    # 12 evaluations and calibrations of the 8,047-row WordNet sample under each of 3
    # OpenBLAS kernels (36 runs, in 3 processes: several minutes on 2 cores); the quick
    # suite keeps the in-process float64-key tests of the same module
    "test_machine_independence.py": frozenset({
        "test_blas_kernels_round_differently_here", "test_the_same_json_under_every_blas_kernel",
        "test_the_same_verification_under_every_blas_kernel",
        "test_the_same_sampled_estimate_under_every_blas_kernel",
        "test_the_same_calibrate_json_under_every_blas_kernel"}),
    "test_engine_tiles.py": frozenset({"test_portable_kernels_give_the_same_json"}),  # 2 compiles
    # SPEC 16 on the 8,047-row WordNet sample against a float64 reference (about a minute)
    "test_diagnosis.py": frozenset({"test_real_data_matches_float64_reference"}),
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
    # statistics over many seeded runs of the sampled engine (300 and 20 evaluations);
    # the quick suite keeps its seeded-estimate and same-seed-same-bytes tests
    "test_engine_sampled.py": frozenset({"test_scaled_fp_counts_are_unbiased",
                                         "test_coverage_smoke_on_small_data"}),
    # SPEC 14 on 1,500 rows against the naive pair-by-pair reference; the quick suite
    # keeps the Hypothesis comparison on small inputs and the other hand-made cases
    "test_verification.py": frozenset({"test_many_keys_per_bin_and_long_gather_rows"}),
}

#: extra -> the modules it installs that tests import (the ``chromium`` binary is no extra)
EXTRAS: dict[str, tuple[str, ...]] = {
    "dask": ("distributed",), "train": ("torch", "pytorch_metric_learning"),
    "mlflow": ("mlflow",), "lightning": ("lightning", "torch"), "hf": ("datasets",),
    "lance": ("lance",), "safetensors": ("safetensors",), "hdf5": ("h5py",),
    "peers": ("sklearn",),
}
#: test module -> {test name (None: all of them, or a docs page id): extras it needs}
NEEDS: dict[str, dict[str | None, tuple[str, ...]]] = {
    "test_engine_dask.py": {None: ("dask",)},
    "test_dask_shards.py": {None: ("dask",)},
    "test_diagnosis_dask.py": {None: ("dask",)},
    "test_pml_agreement.py": {None: ("train",)},
    "test_mlflow.py": {None: ("mlflow",)},
    "test_lightning.py": {None: ("lightning",)},
    # (and test_examples.py's ``digits`` fixture skips its tests without the peers extra)
    "test_examples.py": dict.fromkeys(SLOW["test_examples.py"], ("train",)),
    "test_verification.py": {"test_sklearn_det_curve_brackets_the_eer": ("peers",)},
    "test_open_world_example.py": dict.fromkeys(SLOW["test_open_world_example.py"], ("train",)),
    "test_formats.py": {
        **dict.fromkeys(["test_hf_saved_dataset_and_its_arrow_file_match_parquet",
                         "test_hf_dataset_dict_split", "test_hf_class_label_is_read_as_class_names",
                         "test_hf_ragged_embeddings", "test_hf_missing_column"], ("hf",)),
        "test_lance_dataset_matches_parquet": ("lance",),
        **dict.fromkeys(["test_safetensors_matches_parquet_and_is_memory_mapped",
                         "test_safetensors_keys_and_labels_file",
                         "test_safetensors_wrong_dtype_and_nan"], ("safetensors",)),
        **dict.fromkeys(["test_pt_dict_matches_parquet_and_is_memory_mapped",
                         "test_pt_single_tensor_with_labels_file",
                         "test_pt_malicious_pickle_is_refused_and_never_runs"], ("train",)),
        **dict.fromkeys(["test_hdf5_matches_parquet_mapped_or_not", "test_hdf5_wrong_dtype"],
                        ("hdf5",)),
    },
    "test_docs.py": {  # test_examples_of_page_run, by page
        "docs/how-to/input-formats.md": ("hf", "lance", "safetensors", "hdf5", "train"),
        "docs/how-to/mlflow.md": ("mlflow",),
        "docs/how-to/training-loop.md": ("train", "lightning"),
        "docs/how-to/open-world-training.md": ("train",),
    },
}


def pytest_addoption(parser):
    group = parser.getgroup("opis")
    group.addoption("--slow", action="store_true",
                    help="also run the tests marked slow (tests/conftest.py SLOW); .ci/run does")
    group.addoption("--no-skips", action="store_true",
                    help="a skipped test fails (.ci/run, where every extra is installed)")


def _missing_extras(extras) -> list[str]:
    import importlib.util

    return [e for e in extras
            if any(importlib.util.find_spec(m) is None for m in EXTRAS[e])]


def _needs(item) -> tuple[str, ...]:
    table = NEEDS.get(item.path.name, {})
    name = getattr(item, "originalname", item.name)
    page = getattr(getattr(item, "callspec", None), "id", None)
    return table.get(None, ()) + table.get(name, ()) + (table.get(page, ()) if page else ())


def pytest_collection_modifyitems(config, items):
    """Mark the tests listed in ``SLOW`` (the marker is declared in pyproject.toml);
    deselect them unless --slow (or -m names a marker); skip, with the extra
    to install, the tests whose optional extra is missing."""
    selected, deselected = [], []
    for item in items:
        name = getattr(item, "originalname", item.name)
        names = SLOW.get(item.path.name, frozenset())
        # listed in SLOW, or marked slow where it is written (a parametrized case)
        slow = names is None or name in names or item.get_closest_marker("slow") is not None
        if slow:
            item.add_marker(pytest.mark.slow)
        missing = _missing_extras(_needs(item))
        if missing:
            item.add_marker(pytest.mark.skip(reason="needs the optional extra(s) " + ", ".join(
                missing) + ": pip install '.[" + ",".join(missing) + "]'"))
        if slow and not (config.getoption("--slow") or config.getoption("markexpr")):
            deselected.append(item)
        else:
            selected.append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = selected


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """--no-skips: a skipped test is reported as failed, with its reason."""
    outcome = yield
    rep = outcome.get_result()
    if rep.skipped and item.config.getoption("--no-skips") and not hasattr(rep, "wasxfail"):
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        reason = reason.removeprefix("Skipped: ")
        rep.outcome = "failed"
        rep.longrepr = f"skipped under --no-skips: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """--no-skips: a test module skipped as a whole (importorskip) fails too."""
    outcome = yield
    rep = outcome.get_result()
    if rep.skipped and collector.config.getoption("--no-skips"):
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        reason = reason.removeprefix("Skipped: ")
        rep.outcome = "failed"
        rep.longrepr = f"skipped under --no-skips: {reason}"


@pytest.fixture(autouse=True)
def _warm_kernels_for_output_tests(monkeypatch):
    """The CLI says "compiling kernels (first run only ...)" on stderr when numba's
    cache is cold; which test runs first must not change what the others see, so
    in-process runs see a warm cache (tests/test_first_run.py sets it cold)."""
    monkeypatch.setattr("opis_cli.cli.firstrun.kernels_cold", lambda: False)


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
