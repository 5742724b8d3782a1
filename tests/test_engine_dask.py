"""The distributed (Dask) engine gives byte-identical results to the local one.

A local cluster of two worker processes (one thread each) stands in for a real
cluster. Every comparison is of the whole result document (JSON, provenance
removed) from the local exact engine and from the Dask engine on the same
input, across metrics, utilities, groups, query/gallery splits, FAR-defined
and explicit ranges, with blocks small enough that the work is cut into many
tasks.

Without the ``dask`` extra this module is skipped with that reason;
``.ci/run`` (``--no-skips``, every extra installed) makes a skip a failure.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

distributed = pytest.importorskip(
    "distributed", reason="needs the dask extra: pip install '.[dask]'")

import opis_cli
from opis_cli.cli import main
from opis_cli.engines import base
from opis_cli.engines.dask import DaskEngine
from opis_cli.errors import ConfigError
from opis_cli.io import read_dataset
from result_docs import without_provenance as _doc

REPO = Path(__file__).resolve().parents[1]
STRONG = REPO / "sample_data" / "digits_strong.parquet"
SMALL_BLOCKS = 2**16  # a few rows per block: many blocks and tasks


@pytest.fixture
def small_tiles(monkeypatch):
    """64-row tiles (the client fixes the tile and sends it with each task):
    many tiles and tasks on small data."""
    monkeypatch.setattr(base, "TILE_BYTES", 1)


def _held_out(seed: int, n: int = 1200, d: int = 24, classes: int = 25):
    """Data no engine was tuned on: clustered, with a lone class, duplicates,
    groups and a query/gallery split."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, d))
    idx = rng.integers(0, classes, n)
    y = idx.astype(str).astype(object)
    y[0] = "lonely"
    x = centres[idx] + rng.uniform(0.3, 1.5, classes)[idx, None] * rng.standard_normal((n, d))
    x[5] = x[6]  # an exact duplicate: a tie at distance 0
    part = rng.integers(0, 4, n)
    groups = np.array(["a", "b", "c"], dtype=object)[rng.integers(0, 3, n)]
    return x.astype(np.float32), y, groups, part != 1, part != 0


CASES = [
    dict(metric="cosine"),
    dict(metric="l2", utility="precision-recall", beta=2.0),
    dict(metric="cosine", calibration_range=(0.2, 0.9), num_thresholds=17),
    dict(metric="l2", calibration_range=(2.0, 9.0), threshold_policy="far:0.01"),
    dict(metric="cosine", far_range=(0.05, 0.3), threshold_policy="max-worst-utility"),
    # the verification view's histogram and gather passes (SPEC 14)
    dict(metric="l2", verification=True, dcf=(0.1, 1.0, 2.0)),
    dict(metric="cosine", calibration_range=(0.2, 0.9), verification=True),
    # SPEC 3's --min-class-rows: about a third of the classes excluded by size
    dict(metric="l2", min_class_rows=45),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_dask_equals_local_on_held_out_data(client, case, small_tiles):
    x, y, g, q, gal = _held_out(seed=11)
    kw = dict(groups=g, is_query=q, is_gallery=gal, group_column="group",
              block_bytes=SMALL_BLOCKS, **case)
    local = opis_cli.evaluate(x, y, **kw)
    eng = DaskEngine(block_bytes=SMALL_BLOCKS, client=client)
    with distributed.get_task_stream(client) as ts:
        remote = opis_cli.evaluate(x, y, engine=eng, **kw)
    assert _doc(remote) == _doc(local)
    assert remote.provenance["engine"] == "dask"
    # the chunks really ran on the workers, cut into several tasks
    ran = [t for t in ts.data if t["key"].startswith("_run_chunk_task")]
    assert len(ran) >= 4
    assert {t["worker"] for t in ran} <= set(client.scheduler_info()["workers"])


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_dask_equals_local_on_sample_data_with_groups(client, metric):
    ds = read_dataset(str(STRONG), group_column="group")
    kw = dict(metric=metric, groups=ds.groups, is_query=ds.is_query, is_gallery=ds.is_gallery,
              block_bytes=SMALL_BLOCKS)
    local = opis_cli.evaluate(ds.embeddings, ds.labels, **kw)
    remote = opis_cli.evaluate(ds.embeddings, ds.labels,
                               engine=DaskEngine(block_bytes=SMALL_BLOCKS, client=client), **kw)
    assert _doc(remote) == _doc(local)


def test_result_does_not_depend_on_chunk_size(client, small_tiles):
    x, y, g, q, gal = _held_out(seed=5, n=900)
    kw = dict(groups=g, block_bytes=SMALL_BLOCKS)
    docs = {_doc(opis_cli.evaluate(x, y, engine=DaskEngine(block_bytes=SMALL_BLOCKS,
                                                           client=client, chunk_rows=rows),
                                   **kw))
            for rows in (1, 100, 10_000)}
    assert docs == {_doc(opis_cli.evaluate(x, y, **kw))}


def test_local_cluster_from_workers_option():
    x, y, g, _, _ = _held_out(seed=7, n=600)
    eng = DaskEngine(workers=2, block_bytes=SMALL_BLOCKS)
    remote = opis_cli.evaluate(x, y, groups=g, engine=eng, block_bytes=SMALL_BLOCKS)
    local = opis_cli.evaluate(x, y, groups=g, block_bytes=SMALL_BLOCKS)
    assert _doc(remote) == _doc(local)


def test_cli_scheduler_address_gives_identical_json(client, tmp_path):
    a, b = tmp_path / "local.json", tmp_path / "dask.json"
    common = [str(STRONG), "--group-column", "group", "--block-mib", "1", "-q"]
    assert main(["evaluate", *common, "--json", str(a)]) == 0
    assert main(["evaluate", *common, "--engine", "dask", "--scheduler",
                 client.scheduler.address, "--json", str(b)]) == 0
    da, db = json.loads(a.read_text()), json.loads(b.read_text())
    assert db["provenance"]["engine"] == "dask"
    da.pop("provenance"), db.pop("provenance")
    assert da == db


def test_cli_workers_and_scheduler_exclude_each_other(capsys):
    assert main(["evaluate", str(STRONG), "--engine", "dask", "--workers", "2",
                 "--scheduler", "tcp://127.0.0.1:8786", "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Error: --scheduler and --workers exclude each other")
    assert err.count("\n") == 1


def test_bad_worker_count_is_a_config_error():
    with pytest.raises(ConfigError, match="--workers must be at least 1"):
        DaskEngine(workers=0)


@pytest.mark.parametrize("method", ["per-class", "cluster:4"])
@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_dask_equals_local_with_a_calibration(client, small_tiles, method, metric):
    """SPEC 11 offsets travel with the prepared rows: the same bytes on the cluster."""
    from opis_cli.calibration import fit

    x, y, g, q, gal = _held_out(seed=3, n=800)
    cal = fit(x, y, method=method, target="far:0.05", metric=metric)
    kw = dict(groups=g, is_query=q, is_gallery=gal, metric=metric, block_bytes=SMALL_BLOCKS,
              calibration=cal)
    local = opis_cli.evaluate(x, y, **kw)
    remote = opis_cli.evaluate(x, y, engine=DaskEngine(block_bytes=SMALL_BLOCKS, client=client),
                               **kw)
    assert _doc(remote) == _doc(local)
    assert remote.provenance["calibration"]["method"] == method
