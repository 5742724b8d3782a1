"""numba's start-up begun while an input is read (opis_cli/engines/warmup.py).

Its saving is measured by ``benchmarks/bench_process.py --without-warmup``, never
here. Checked: when it begins (input size, once, the private switch), that it
cannot deadlock against a main thread that loads the kernels at the same time
(fresh interpreters, the kernels' import begun after a sweep of delays), and
that the command's JSON is the same bytes with it and without it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from opis_cli.engines import warmup

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def fresh_state(monkeypatch):
    """warmup's once-per-process state, as in a new process (restored after)."""
    monkeypatch.setattr(warmup, "_thread", None)
    monkeypatch.setattr(warmup, "error", None)
    monkeypatch.delenv("_OPIS_NO_WARMUP", raising=False)


def test_begins_for_large_inputs_once(fresh_state):
    assert not warmup.start(warmup.WARM_BYTES - 1)
    assert warmup._thread is None
    assert warmup.start(warmup.WARM_BYTES)
    assert warmup.join(60) and warmup.error is None
    assert "numba.np.arraymath" in sys.modules  # what the start-up imports
    assert not warmup.start(10 * warmup.WARM_BYTES)  # once per process


def test_private_switch_turns_it_off(fresh_state, monkeypatch):
    monkeypatch.setenv("_OPIS_NO_WARMUP", "1")
    assert not warmup.start(10 * warmup.WARM_BYTES)
    assert warmup._thread is None and warmup.join(0)


def test_input_bytes(tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(b"x" * 1000)
    assert warmup.input_bytes(str(f)) == 1000
    folder = tmp_path / "shards"
    (folder / "sub").mkdir(parents=True)
    (folder / "p0.parquet").write_bytes(b"x" * 300)
    (folder / "sub" / "p1.parquet").write_bytes(b"x" * 200)
    assert warmup.input_bytes(str(folder)) == 500
    assert warmup.input_bytes(str(tmp_path / "missing.parquet")) == 0


#: a fresh interpreter: the start-up begun, then after a delay the main thread
#: imports the kernels (creating numba's contexts) and runs one compiled kernel
_RACE = r"""
import sys, threading, time
from opis_cli.engines import warmup
assert warmup.start(warmup.WARM_BYTES)
time.sleep(float(sys.argv[1]))
import numpy as np
from opis_cli.engines import _kernels
out = _kernels.exact_keys(np.ones((2, 3), np.float32), np.ones((2, 3), np.float32),
                          np.array([0, 1]), np.array([1, 0]), False, False,
                          np.zeros(2), np.zeros(2))
assert warmup.join(60) and warmup.error is None, warmup.error
print(out.tolist())
"""


@pytest.mark.parametrize("delay", [0.0, 0.002, 0.01, 0.03, 0.1, 0.3])
def test_no_deadlock_with_a_main_thread_loading_the_kernels(delay):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("_OPIS_NO_WARMUP", None)
    proc = subprocess.run([sys.executable, "-c", _RACE, str(delay)], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[-2.0, -2.0]"  # 1 - 3 for cosine keys of ones


def _json(path: Path) -> dict:
    d = json.loads(path.read_text())
    d.pop("provenance", None)
    return d


def test_cli_json_is_the_same_with_and_without_it(tmp_path):
    rng = np.random.default_rng(7)
    n, dim = 1500, 384  # 2.3 MB as Parquet: above WARM_BYTES
    x = rng.standard_normal((n, dim)).astype(np.float32)
    table = pa.table({"embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), dim),
                      "label": pa.array((np.arange(n) % 60).astype(str)),
                      "is_query": pa.array(np.arange(n) % 3 == 0)})
    path = tmp_path / "emb.parquet"
    pq.write_table(table, path)
    assert os.path.getsize(path) >= warmup.WARM_BYTES
    outs = {}
    for switch in ("0", "1"):
        env = dict(os.environ, PYTHONPATH=str(REPO), _OPIS_NO_WARMUP=switch)
        out = tmp_path / f"r{switch}.json"
        proc = subprocess.run([sys.executable, "-m", "opis_cli.cli", "evaluate", str(path),
                               "--json", str(out), "-q"], capture_output=True, text=True,
                              env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        outs[switch] = _json(out)
    assert outs["0"] == outs["1"]
