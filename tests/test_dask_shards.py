"""The Dask engine's workers read their own Parquet shards (opis_cli.io.shards).

A local cluster of two worker processes (one thread each) stands in for a
real cluster; the dataset is a folder of several Parquet files with small
row groups. Every comparison is of the whole result document (JSON without
provenance) from the local exact engine on the arrays in memory and from
the Dask engine whose workers read the files: FAR-defined and explicit
ranges, groups, query/gallery flags, a calibration, the verification view,
several block sizes and worker counts. Further tests check that the client
never reads the embedding column, that a task loads only its two blocks
(and only the row groups that hold them), and that bad input ends in one
line and exit code 2.

Without the ``dask`` extra this module is skipped with that reason;
``.ci/run`` (``--no-skips``, every extra installed) makes a skip a failure.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

distributed = pytest.importorskip(
    "distributed", reason="needs the dask extra: pip install '.[dask]'")

import opis_cli
from opis_cli.calibration import fit as fit_calibration
from opis_cli.cli import main
from opis_cli.engines import dask as dask_engine
from opis_cli.engines.dask import DaskEngine
from opis_cli.errors import ConfigError, InputError
from opis_cli.io.shards import open_parquet
from result_docs import without_provenance as _doc


def _data(seed: int, n: int = 640, d: int = 12, classes: int = 18, shift: float = 0.0,
          integer: bool = True):
    """Clustered rows (small integers: every float32 product exact), a lone
    class, an exact duplicate, groups and a query/gallery split."""
    rng = np.random.default_rng(seed)
    cls = rng.integers(0, classes, n)
    if integer:
        x = rng.integers(-6, 7, (classes, d))[cls] + rng.integers(-3, 4, (n, d))
    else:
        x = rng.standard_normal((classes, d))[cls] + 0.8 * rng.standard_normal((n, d))
    x = (x + shift).astype(np.float32)
    y = cls.astype(str).astype(object)
    y[3] = "lonely"
    x[7] = x[8]
    part = rng.integers(0, 4, n)
    groups = np.array(["a", "b", "c"], dtype=object)[rng.integers(0, 3, n)]
    return x, y, groups, part != 1, part != 0


def _write(folder, x, y, groups, is_query, is_gallery, files: int = 3, row_group: int = 50,
           fixed: bool = True) -> str:
    """``files`` Parquet files of consecutive rows, ``row_group`` rows per row group."""
    os.makedirs(folder, exist_ok=True)
    cuts = np.linspace(0, len(x), files + 1).astype(int)
    for i in range(files):
        s, e = cuts[i], cuts[i + 1]
        flat = pa.array(x[s:e].ravel())
        emb = (pa.FixedSizeListArray.from_arrays(flat, x.shape[1]) if fixed else
               pa.ListArray.from_arrays(pa.array(np.arange(0, (e - s + 1) * x.shape[1],
                                                           x.shape[1], dtype=np.int32)), flat))
        t = pa.table({"embedding": emb, "label": pa.array(y[s:e].astype(str)),
                      "group": pa.array(groups[s:e].astype(str)),
                      "is_query": pa.array(is_query[s:e]), "is_gallery": pa.array(is_gallery[s:e])})
        pq.write_table(t, os.path.join(folder, f"part-{i}.parquet"), row_group_size=row_group)
    return str(folder)


def _both(client, folder, x, y, groups, q, gal, block_rows, flags=True, **kw):
    """(local document, sharded Dask document, the Dask result)."""
    masks = dict(is_query=q, is_gallery=gal) if flags else {}
    local = opis_cli.evaluate(x, y, groups=groups, group_column="group", **masks, **kw)
    ds = open_parquet(folder, group_column="group")
    smasks = dict(is_query=ds.is_query, is_gallery=ds.is_gallery) if flags else {}
    remote = opis_cli.evaluate(ds.embeddings, ds.labels, groups=ds.groups, group_column="group",
                               engine=DaskEngine(client=client, block_rows=block_rows),
                               **smasks, **kw)
    return _doc(local), _doc(remote), remote


CASES = [
    (dict(metric="l2"), True, 97),
    (dict(metric="l2"), False, 250),
    (dict(metric="l2", calibration_range=(2.0, 9.0), num_thresholds=17), True, 160),
    (dict(metric="l2", far_range=(0.05, 0.3), threshold_policy="max-worst-utility"), True, 700),
    (dict(metric="l2", verification=True, dcf=(0.1, 1.0, 2.0)), True, 130),
    (dict(metric="cosine", calibration_range=(0.2, 0.9)), True, 200),
    # SPEC 3's --min-class-rows (the pilot's rows and the order statistic follow it)
    (dict(metric="l2", min_class_rows=36), True, 160),
]


@pytest.mark.parametrize("case,flags,block_rows", CASES,
                         ids=lambda v: str(v) if not isinstance(v, dict) else
                         "-".join(f"{k}={w}" for k, w in v.items()))
def test_shards_equal_local(client, tmp_path, case, flags, block_rows):
    x, y, g, q, gal = _data(seed=11)
    folder = _write(tmp_path / "ds", x, y, g, q, gal)
    with distributed.get_task_stream(client) as ts:
        local, remote, res = _both(client, folder, x, y, g, q, gal, block_rows, flags, **case)
    assert remote == local
    notes = res.provenance["engine_notes"]
    assert notes["block_rows"] == block_rows
    assert notes["blocks"] == -(-len(x) // block_rows)
    ran = [t for t in ts.data if t["key"].startswith("_pair_task")]
    assert len(ran) >= notes["blocks"] ** 2 - 1  # one task per (query block, gallery block)
    assert {t["worker"] for t in ran} <= set(client.run(os.getpid))  # the worker processes


def test_shards_centred_l2_and_floats(client, tmp_path):
    """Rows far from the origin (prepare's l2 centre applies) and non-integer
    rows (float32 products rounded: decided on float64 keys)."""
    x, y, g, q, gal = _data(seed=3, shift=100.0)
    folder = _write(tmp_path / "far", x, y, g, q, gal, files=4, row_group=37)
    docs = {_both(client, folder, x, y, g, q, gal, b, metric="l2")[1] for b in (90, 640)}
    assert docs == {_both(client, folder, x, y, g, q, gal, 90, metric="l2")[0]}
    x, y, g, q, gal = _data(seed=4, integer=False)
    folder = _write(tmp_path / "float", x, y, g, q, gal, files=2, row_group=64, fixed=False)
    for metric in ("cosine", "l2"):
        local, remote, _ = _both(client, folder, x, y, g, q, gal, 150, metric=metric)
        assert remote == local


def test_shards_with_a_calibration(client, tmp_path):
    x, y, g, q, gal = _data(seed=5)
    folder = _write(tmp_path / "ds", x, y, g, q, gal)
    cal = fit_calibration(x, y, method="per-class", target="far:0.05", metric="l2")
    local, remote, _ = _both(client, folder, x, y, g, q, gal, 120, metric="l2", calibration=cal)
    assert remote == local
    # cluster:K assigns rows by their embeddings, which stay on the workers
    cal = fit_calibration(x, y, method="cluster:3", target="far:0.05", metric="l2")
    ds = open_parquet(folder)
    with pytest.raises(ConfigError, match="stay on the Dask workers"):
        opis_cli.evaluate(ds.embeddings, ds.labels, metric="l2", calibration=cal,
                          engine=DaskEngine(client=client, block_rows=120))


def test_result_does_not_depend_on_blocks_or_workers(client, tmp_path):
    x, y, g, q, gal = _data(seed=7, n=500)
    folder = _write(tmp_path / "ds", x, y, g, q, gal, files=5, row_group=23)
    ds = open_parquet(folder, group_column="group")
    kw = dict(metric="l2", groups=ds.groups, group_column="group")
    docs = {_doc(opis_cli.evaluate(ds.embeddings, ds.labels,
                                   engine=DaskEngine(client=client, block_rows=b), **kw))
            for b in (64, 171, 499, 5000)}
    docs.add(_doc(opis_cli.evaluate(ds.embeddings, ds.labels,
                                    engine=DaskEngine(workers=1, block_rows=100), **kw)))
    assert docs == {_doc(opis_cli.evaluate(x, y, metric="l2", groups=g, group_column="group"))}


def test_client_never_reads_the_embedding_column(client, tmp_path, monkeypatch):
    """Every Parquet read in the client process is recorded: none asks for
    the embedding column (the workers are other processes)."""
    x, y, g, q, gal = _data(seed=8)
    folder = _write(tmp_path / "ds", x, y, g, q, gal)
    asked = []
    for name in ("read", "read_row_group", "read_row_groups", "iter_batches"):
        orig = getattr(pq.ParquetFile, name)

        def spy(self, *a, _orig=orig, _name=name, **k):
            asked.append((_name, tuple(k.get("columns") or ("<all>",))))
            return _orig(self, *a, **k)

        monkeypatch.setattr(pq.ParquetFile, name, spy)
    monkeypatch.setattr(pq, "read_table", lambda *a, **k: pytest.fail("read_table in the client"))
    ds = open_parquet(folder, group_column="group")
    res = opis_cli.evaluate(ds.embeddings, ds.labels, groups=ds.groups, is_query=ds.is_query,
                            is_gallery=ds.is_gallery, metric="l2",
                            engine=DaskEngine(client=client, block_rows=200))
    assert asked, "the spy saw no read at all"
    assert all("embedding" not in cols and "<all>" not in cols for _, cols in asked), asked
    assert {c for _, cols in asked for c in cols} == {"label", "group", "is_query", "is_gallery"}
    assert res.opis is not None


def test_a_task_loads_only_its_blocks(tmp_path, monkeypatch):
    """In this process: ``_pair_task`` of (query block 2, gallery block 0)
    loads exactly those two blocks, reading only the row groups that hold
    them and only the embedding column."""
    x, y, g, q, gal = _data(seed=9, n=400)
    folder = _write(tmp_path / "ds", x, y, g, q, gal, files=4, row_group=30)
    ds = open_parquet(folder)
    prep = ds.embeddings.arrange(ds.labels, metric="cosine")
    read = []
    orig = pq.ParquetFile.read_row_group

    def spy(self, i, *a, **k):
        read.append((i, tuple(k.get("columns") or ())))
        return orig(self, i, *a, **k)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", spy)

    class FakeClient:  # _ShardRun needs the client only for l2 norms and passes
        pass

    run = dask_engine._ShardRun(FakeClient(), prep, 100)
    ev = np.ones(len(prep.q_rows), bool)
    qb = run._block(2, ev, ev)
    gb = run._block(0, ev, ev)
    dask_engine._CACHE.clear()
    dask_engine._worker_loads()
    cfg = dask_engine.PassConfig(K=5, l2=False, block_rows=1 << 20, tile=64, do_rep=True,
                                 r_lo=0.0, r_hi=2.0)
    (i, j, part), cand = dask_engine._pair_task(run.layout, qb, gb, cfg, True)
    assert (i, j) == (2, 0)
    assert dask_engine._worker_loads() == [(200, 300), (0, 100)]
    # rows 200-299 lie in row groups [180, 210) ... [270, 300) of the files of 100 rows
    assert all(cols == ("embedding",) for *_, cols in read)
    starts = ds.embeddings.shards.rg_start
    want = {k for k in range(len(starts) - 1)
            if starts[k] < 300 and starts[k + 1] > 200 or starts[k] < 100}
    assert len(read) == len(want)
    # the candidates name only gallery rows of block 0; the counts only the
    # classes of block 2's queries
    assert len(cand[2]) and set(np.unique(cand[2]) // 100) == {0}
    assert np.array_equal(part.class_ids, np.unique(prep.q_class[qb.qi]))


def test_read_rows_reads_only_the_row_groups_that_hold_them(tmp_path, monkeypatch):
    x, y, g, q, gal = _data(seed=10, n=300)
    folder = _write(tmp_path / "ds", x, y, g, q, gal, files=3, row_group=20)
    shards = open_parquet(folder).embeddings.shards
    seen = []
    orig = pq.ParquetFile.read_row_group
    monkeypatch.setattr(pq.ParquetFile, "read_row_group",
                        lambda self, i, *a, **k: seen.append(i) or orig(self, i, *a, **k))
    rows = np.array([299, 5, 150, 151, 42])
    got = shards.read_rows(rows)
    assert np.array_equal(got, x[rows])
    assert len(seen) == 4  # row groups of rows 5, 42, 150/151, 299


def _cli(args, capsys):
    capsys.readouterr()
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_json_equals_local(client, tmp_path, capsys):
    x, y, g, q, gal = _data(seed=12)
    folder = _write(tmp_path / "ds", x, y, g, q, gal)
    common = [folder, "--metric", "l2", "--group-column", "group", "--quiet"]
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert _cli(["evaluate", *common, "--json", str(a)], capsys)[0] == 0
    code, _, err = _cli(["evaluate", *common, "--engine", "dask", "--scheduler",
                         client.scheduler.address, "--worker-mib", "256", "--json", str(b)],
                        capsys)
    assert code == 0, err
    da, db = json.loads(a.read_text()), json.loads(b.read_text())
    pa_, pb = da.pop("provenance"), db.pop("provenance")
    assert da == db
    assert pa_["inputs"] == pb["inputs"]
    # a 256 MiB budget is below the formula's fixed part: the smallest blocks
    assert pb["engine"] == "dask" and pb["engine_notes"]["block_rows"] == 256
    assert pb["engine_notes"]["blocks"] == 3


def test_cli_bad_input_is_one_line_exit_2(client, tmp_path, capsys):
    x, y, g, q, gal = _data(seed=13, n=200)
    folder = _write(tmp_path / "ds", x, y, g, q, gal, files=2, row_group=25)
    sched = ["--engine", "dask", "--scheduler", client.scheduler.address]
    code, out, err = _cli(["evaluate", folder, "--label-column", "nope", *sched], capsys)
    assert code == 2 and "no column 'nope'" in err and len(err.strip().splitlines()) == 1
    code, out, err = _cli(["evaluate", folder, "--embedding-column", "emb", *sched], capsys)
    assert code == 2 and "no column 'emb'" in err and len(err.strip().splitlines()) == 1
    code, out, err = _cli(["evaluate", folder, *sched, "--worker-mib", "10"], capsys)
    assert code == 2 and "--worker-mib" in err and len(err.strip().splitlines()) == 1
    # a file whose embedding pages are damaged: the client reads only the
    # labels (fine), a worker fails to read the embeddings
    path = os.path.join(folder, "part-1.parquet")
    col = pq.ParquetFile(path).metadata.row_group(0).column(0)
    with open(path, "rb") as fh:
        raw = bytearray(fh.read())
    start = col.data_page_offset
    raw[start:start + col.total_compressed_size] = b"\xff" * col.total_compressed_size
    with open(path, "wb") as fh:
        fh.write(bytes(raw))
    code, _, err = _cli(["evaluate", folder, *sched, "--metric", "l2"], capsys)
    assert code == 2, err
    assert "part-1.parquet" in err and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_api_errors(client, tmp_path):
    x, y, g, q, gal = _data(seed=14, n=200)
    x[150, 3] = np.nan
    folder = _write(tmp_path / "ds", x, y, g, q, gal, files=2, row_group=25)
    ds = open_parquet(folder)
    with pytest.raises(InputError, match=r"^embeddings: row 150 contains NaN"):
        opis_cli.evaluate(ds.embeddings, ds.labels, metric="l2",
                          engine=DaskEngine(client=client, block_rows=64))
    with pytest.raises(ConfigError, match="needs engine=DaskEngine"):
        opis_cli.evaluate(ds.embeddings, ds.labels)
    # a file gone from the workers' view after the client opened it
    x, y, g, q, gal = _data(seed=15, n=200)
    folder = _write(tmp_path / "gone", x, y, g, q, gal, files=2, row_group=25)
    ds = open_parquet(folder)
    os.remove(os.path.join(folder, "part-0.parquet"))
    with pytest.raises(InputError, match="part-0.parquet: cannot read this file on worker"):
        opis_cli.evaluate(ds.embeddings, ds.labels, metric="cosine",
                          engine=DaskEngine(client=client, block_rows=64))


def test_block_rows_from_the_memory_budget():
    b = dask_engine.block_rows_for(2048 * 2**20, 384, 64, 101)
    per_row = (dask_engine.CACHE_BLOCKS + 2) * 384 * 4 + 21 * 64 + 136 + 101 * 32 + 2 * 8 * 25
    assert b == (2048 * 2**20 - dask_engine.WORKER_BASE_BYTES) // per_row
    assert dask_engine.block_rows_for(64 * 2**20, 384, 64, 101) == 256
    with pytest.raises(ConfigError, match="--worker-mib"):
        DaskEngine(worker_bytes=10 * 2**20)


@pytest.mark.parametrize("metric,offsets", [("cosine", False), ("l2", False), ("l2", True),
                                            ("cosine", True)])
def test_retrieval_candidates_are_the_first_by_float64_key(metric, offsets):
    """``_candidates`` keeps, per query, exactly the first ``min(h, n)`` gallery
    items by (float64 key, original row): brute force on rows with many
    near-ties (duplicates nudged by one float32 ulp)."""
    from opis_cli.engines.base import exact_keys
    from opis_cli.prepare import prepare

    rng = np.random.default_rng(21)
    base_rows = rng.standard_normal((60, 9)).astype(np.float32)
    x = base_rows[rng.integers(0, 60, 400)]
    x[::3] = np.nextafter(x[::3], np.float32(np.inf))  # near-ties
    y = rng.integers(0, 12, 400).astype(str)
    prep = prepare(x + 3.0, y, metric=metric, is_query=np.arange(400) % 5 != 0)
    if offsets:
        prep = prep.with_offsets(rng.uniform(-0.1, 0.1, 400), rng.uniform(-0.1, 0.1, 400))
    nq, ng = len(prep.q_rows), len(prep.g_rows)
    h = rng.integers(0, 30, nq)
    q, key, orig, isp = dask_engine._candidates(prep, h, 64)
    qq, gg = np.meshgrid(np.arange(nq), np.arange(ng), indexing="ij")
    keys = exact_keys(prep, qq.ravel(), gg.ravel()).reshape(nq, ng)
    for i in range(nq):
        cols = np.array([j for j in range(ng) if j != prep.self_col[i]])
        order = cols[np.lexsort((prep.g_rows[cols], keys[i, cols]))][:h[i]]
        got = q == i
        assert np.array_equal(orig[got], prep.g_rows[order]), i
        assert np.array_equal(key[got], keys[i, order])
        ps, pe = prep.class_start[prep.q_class[i]], prep.class_end[prep.q_class[i]]
        assert np.array_equal(isp[got], (order >= ps) & (order < pe))
