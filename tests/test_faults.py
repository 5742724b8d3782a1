"""What happens when things go wrong (issue 27, item 4; docs/reference/faults.md).

- SIGINT / SIGTERM during ``evaluate``, ``compare`` and ``calibrate`` (the CLI
  in a child process, the signal sent while a pass runs): exit 130 / 143,
  no partial or temporary file left, the earlier outputs at the same paths
  byte for byte as they were, no traceback.
- A full disk (``ENOSPC`` injected at the write of the JSON, the curves
  table, the report's figures): one ``Error:`` line, exit 2, no file written
  or changed, no temporary file left.
- An output folder that cannot take files (read-only, missing, not a folder):
  one ``Error:`` line, exit 2, before the input is even read.

- Dask (``--engine dask`` on a ``.npy`` input, the LocalCluster of
  conftest.py): a worker killed as the counting pass starts costs nothing
  (the same JSON bytes); every worker killed is one line, exit 2, no file.
- Dask on a Parquet input (the workers read their own shards): one worker
  or every worker killed as the first pass starts (the nannies restart
  them) costs nothing, the same JSON bytes; workers that never come back
  (no-workers-timeout) are one line, exit 2, no file.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from opis_cli.cli import main

REPO = Path(__file__).resolve().parents[1]


def _write_parquet(path: Path, seed: int, n: int = 3000, d: int = 16, classes: int = 60,
                   groups: bool = True) -> Path:
    """Clustered float32 rows with a group column."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = (rng.standard_normal((classes, d))[y] + 0.7 * rng.standard_normal((n, d)))
    x = x.astype(np.float32)
    cols = {"embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), d),
            "label": pa.array(y.astype(str))}
    if groups:
        cols["group"] = pa.array(np.array(["a", "b", "c"])[rng.integers(0, 3, n)])
    pq.write_table(pa.table(cols), path, row_group_size=500)
    return path


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative path -> bytes), hidden ones included."""
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            p = Path(dirpath) / name
            out[str(p.relative_to(root))] = p.read_bytes()
    return out


def _earlier_outputs(folder: Path, names: list[str]) -> None:
    """Files (and report folders) from an earlier run at the output paths."""
    for name in names:
        p = folder / name
        if name.endswith("/"):
            p.mkdir()
            (p / "report.html").write_text(f"earlier {name}\n")
            (p / "calibrate.html").write_text(f"earlier {name}\n")
            (p / "compare.html").write_text(f"earlier {name}\n")
        else:
            p.write_text(f"earlier {name}\n")


# ---------------------------------------------------------------- signals

#: Runs the CLI with every progress callback reporting each stage on stdout;
#: with OPIS_TEST_HOLD=1 the first call of a computing stage (made in the
#: main thread, before the pass starts its tiles) waits there, so that the
#: signal lands inside the pass whatever the machine's speed.
_CHILD = r"""
import contextlib, os, sys, threading, time
import opis_cli.render.terminal as terminal

HOLD = os.environ.get("OPIS_TEST_HOLD") == "1"

@contextlib.contextmanager
def progress_bar(enabled):
    seen = set()
    def callback(stage, done, total):
        if stage not in seen:
            seen.add(stage)
            print("STAGE", stage, flush=True)
        if (HOLD and stage != "reading" and done == 0
                and threading.current_thread() is threading.main_thread()):
            print("HOLD", stage, flush=True)
            time.sleep(300)
    yield callback

terminal.progress_bar = progress_bar
from opis_cli.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _default_sigint():
    # a test run in the background inherits SIGINT ignored; a terminal's
    # Ctrl-C reaches a process whose SIGINT is at its default
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _run_and_signal(args: list[str], cwd: Path, sig: int, hold: bool, wait_for: str,
                    timeout: float = 240) -> tuple[int, str, list[str]]:
    """Start the CLI, send ``sig`` once a line starting with ``wait_for``
    appears on its stdout; (exit code, stderr, stdout lines)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OPIS_TEST_HOLD="1" if hold else "0")
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith(wait_for):
                proc.send_signal(sig)
                break
        rest, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines += rest.splitlines()
    return proc.returncode, err, lines


COMMANDS = {
    "evaluate": (["evaluate", "a.parquet", "--group-column", "group", "--json", "out.json",
                  "--curves", "curves.csv", "--report", "rep/"],
                 ["out.json", "curves.csv", "rep/"]),
    "compare": (["compare", "a.parquet", "b.parquet", "--json", "out.json", "--markdown",
                 "summary.md", "--report", "rep/"],
                ["out.json", "summary.md", "rep/"]),
    "calibrate": (["calibrate", "a.parquet", "--folds", "2", "--json", "out.json",
                   "--report", "rep/"],
                  ["out.json", "rep/"]),
}


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_signal_mid_pass_exits_and_leaves_the_earlier_outputs(tmp_path, command, sig, code):
    args, outputs = COMMANDS[command]
    _write_parquet(tmp_path / "a.parquet", seed=1)
    _write_parquet(tmp_path / "b.parquet", seed=2)
    _earlier_outputs(tmp_path, outputs)
    before = _tree(tmp_path)
    rc, err, lines = _run_and_signal(args, tmp_path, sig, hold=True, wait_for="HOLD")
    assert any(line.startswith("HOLD") for line in lines), (lines, err)
    assert rc == code, err
    assert "Traceback" not in err
    assert _tree(tmp_path) == before  # nothing new, nothing changed, no temporary file


@pytest.mark.slow
def test_sigterm_inside_the_compiled_kernels(tmp_path):
    """Not held: SIGTERM as the counting pass starts its tiles on the worker
    threads (the verification pass still to come); the run exits 143."""
    _write_parquet(tmp_path / "a.parquet", seed=3, n=20_000, d=32, classes=400,
                   groups=False)
    _earlier_outputs(tmp_path, ["out.json"])
    before = _tree(tmp_path)
    rc, err, lines = _run_and_signal(["evaluate", "a.parquet", "--json", "out.json",
                                      "--verification"],
                                     tmp_path, signal.SIGTERM, hold=False,
                                     wait_for="STAGE counts")
    assert lines[-1] == "STAGE counts", (lines, err)
    assert rc == 143, err
    assert "Traceback" not in err
    assert _tree(tmp_path) == before


def test_the_signal_handler_is_restored_after_main():
    previous = signal.getsignal(signal.SIGTERM)
    assert main(["--version"]) == 0
    assert signal.getsignal(signal.SIGTERM) is previous


def test_terminated_unwinds_like_ctrl_c(tmp_path, monkeypatch, capsys):
    """In process: SIGTERM received inside the evaluation ends in 143, the
    staged files removed, the earlier file kept."""
    import opis_cli.api as api

    _write_parquet(tmp_path / "a.parquet", seed=4, n=400)
    (tmp_path / "out.json").write_text("earlier\n")

    def terminated(*a, **kw):
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("the SIGTERM handler did not raise")

    monkeypatch.setattr(api, "evaluate", terminated)
    assert main(["evaluate", str(tmp_path / "a.parquet"), "--json",
                 str(tmp_path / "out.json"), "-q"]) == 143
    assert (tmp_path / "out.json").read_text() == "earlier\n"
    assert sorted(os.listdir(tmp_path)) == ["a.parquet", "out.json"]


# ---------------------------------------------------------------- a full disk


class _FullDisk:
    """Files opened for writing under ``folder`` take ``room`` bytes, then
    every write raises ENOSPC (as a full disk does: a partial file first)."""

    def __init__(self, monkeypatch, folder: Path, room: int = 10, match: str = ""):
        self.folder, self.room, self.match, self.hits = str(folder), room, match, []
        real_open = builtins.open
        disk = self

        class Full(io.RawIOBase):
            def __init__(self, fh):
                self.fh, self.written = fh, 0

            def writable(self):
                return True

            def write(self, b):
                if self.written + len(b) > disk.room:
                    take = max(0, disk.room - self.written)
                    self.fh.write(bytes(b[:take]) if not isinstance(b, str) else b[:take])
                    self.written += take
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                self.written += len(b)
                return self.fh.write(b)

            def close(self):
                self.fh.close()
                super().close()

            def __getattr__(self, name):
                return getattr(self.fh, name)

        def opener(file, mode="r", *a, **kw):
            fh = real_open(file, mode, *a, **kw)
            name = os.fspath(file) if isinstance(file, (str, os.PathLike)) else ""
            if (any(m in mode for m in "wax") and str(name).startswith(disk.folder)
                    and disk.match in os.path.basename(name)):
                disk.hits.append(name)
                return Full(fh)
            return fh

        monkeypatch.setattr(builtins, "open", opener)
        monkeypatch.setattr(io, "open", opener)

        import pyarrow.csv as pcsv

        def native(real):  # Arrow writes Parquet and CSV files itself, not through open()
            def write(table, where, *a, **kw):
                if (str(where).startswith(disk.folder)
                        and disk.match in os.path.basename(str(where))):
                    disk.hits.append(str(where))
                    with real_open(where, "wb") as fh:
                        fh.write(b"PAR1")
                    # what Arrow raises: an OSError with the system's message
                    raise OSError(errno.ENOSPC, f"[Errno 28] {os.strerror(errno.ENOSPC)}")
                return real(table, where, *a, **kw)
            return write

        monkeypatch.setattr(pq, "write_table", native(pq.write_table))
        monkeypatch.setattr(pcsv, "write_csv", native(pcsv.write_csv))


@pytest.fixture(scope="module")
def small_input(tmp_path_factory):
    folder = tmp_path_factory.mktemp("full_disk_input")
    return _write_parquet(folder / "a.parquet", seed=5, n=600, classes=20)


@pytest.mark.parametrize("failing,outputs", [
    ("out.json", ["out.json"]),
    ("curves.parquet", ["out.json", "curves.parquet"]),
    ("curves.csv", ["out.json", "curves.csv"]),
    (".png", ["out.json", "rep/"]),
    ("report.html", ["out.json", "rep/"]),
], ids=["json", "curves-parquet", "curves-csv", "report-figure", "report-page"])
def test_full_disk_is_one_line_and_nothing_changes(tmp_path, monkeypatch, capsys, small_input,
                                                   failing, outputs):
    out = tmp_path / "out"
    out.mkdir()
    _earlier_outputs(out, outputs)
    before = _tree(out)
    args = ["evaluate", str(small_input), "-q", "--group-column", "group"]
    for name in outputs:
        option = {"out.json": "--json", "curves.parquet": "--curves", "curves.csv": "--curves",
                  "rep/": "--report"}[name]
        args += [option, str(out / name)]
    disk = _FullDisk(monkeypatch, out, match=failing)
    code = main(args)
    err = capsys.readouterr().err
    assert disk.hits, "the injected full disk was never written to"
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    assert "No space left on device" in lines[0]
    assert "free some space" in lines[0] and lines[0].endswith(
        "the files being written were removed, earlier files at their paths are unchanged")
    assert str(out) in lines[0]  # names the output being written
    assert _tree(out) == before


@pytest.mark.parametrize("failing", ["compare.html", ".png"])
def test_full_disk_compare_report_all_or_none(tmp_path, monkeypatch, capsys, small_input,
                                               failing):
    """The comparison report's page and figures appear together or not at all:
    a full disk at the page leaves no new figure beside the earlier page."""
    out = tmp_path / "out"
    out.mkdir()
    _earlier_outputs(out, ["rep/"])
    before = _tree(out)
    disk = _FullDisk(monkeypatch, out, match=failing)
    code = main(["compare", str(small_input), str(small_input), "-q", "--report",
                 str(out / "rep")])
    err = capsys.readouterr().err
    assert disk.hits and code == 2, err
    assert err.startswith(f"Error: {out / 'rep'}") and err.count("\n") == 1, err
    assert "No space left on device" in err
    assert _tree(out) == before


def test_full_disk_gate_outputs(tmp_path, monkeypatch, capsys, small_input):
    """opis gate's --json/--junit/--markdown: all or none."""
    result = tmp_path / "r.json"
    assert main(["evaluate", str(small_input), "-q", "--json", str(result)]) == 0
    out = tmp_path / "out"
    out.mkdir()
    _earlier_outputs(out, ["g.json", "junit.xml", "summary.md"])
    before = _tree(out)
    _FullDisk(monkeypatch, out, match="junit.xml")
    code = main(["gate", str(result), "--max", "opis=1", "--json", str(out / "g.json"),
                 "--junit", str(out / "junit.xml"), "--markdown", str(out / "summary.md")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith(f"Error: {out / 'junit.xml'}: cannot write (No space left")
    assert _tree(out) == before


def test_full_disk_when_the_temporary_file_cannot_be_created(tmp_path, monkeypatch, capsys,
                                                             small_input):
    """No room even for the empty temporary file (mkstemp fails) after the
    early checks passed: still one line, nothing changed."""
    from opis_cli.io import output

    (tmp_path / "out.json").write_text("earlier\n")
    real = output.tempfile.mkstemp
    calls = []

    def mkstemp(*a, **kw):
        calls.append(kw.get("prefix", ""))
        if kw.get("prefix", "").startswith(".out.json."):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*a, **kw)

    monkeypatch.setattr(output.tempfile, "mkstemp", mkstemp)
    code = main(["evaluate", str(small_input), "-q", "--json", str(tmp_path / "out.json")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"Error: {tmp_path / 'out.json'}: cannot write (No space left")
    assert (tmp_path / "out.json").read_text() == "earlier\n"
    assert sorted(os.listdir(tmp_path)) == ["out.json"]


# ---------------------------------------------------------------- unwritable output folders


class _NoWork:
    """Records whether the input was read or evaluated (it must not be)."""

    def __init__(self, monkeypatch):
        import opis_cli.api as api
        import opis_cli.io as io_pkg
        import opis_cli.transfer as transfer

        self.calls = []
        for mod, name in ((io_pkg, "read_dataset"), (api, "evaluate"),
                          (transfer, "calibrate")):
            monkeypatch.setattr(mod, name, self._record(name))

    def _record(self, name):
        def called(*a, **kw):
            self.calls.append(name)
            raise AssertionError(f"{name} ran before the outputs were checked")
        return called


def _read_only(monkeypatch, folder: Path):
    """The folder refuses new files (EROFS), as a read-only mount does, also for root."""
    from opis_cli.io import output

    real = output.tempfile.mkstemp

    def mkstemp(*a, dir=None, **kw):
        if dir is not None and Path(dir).resolve() == folder.resolve():
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real(*a, dir=dir, **kw)

    monkeypatch.setattr(output.tempfile, "mkstemp", mkstemp)


@pytest.fixture(scope="module")
def result_json(tmp_path_factory, small_input):
    path = tmp_path_factory.mktemp("ro_result") / "r.json"
    assert main(["evaluate", str(small_input), "-q", "--json", str(path)]) == 0
    return path


CASES = [
    ("evaluate", ["--json", "{ro}/r.json"], "--json"),
    ("evaluate", ["--curves", "{ro}/c.csv"], "--curves"),
    ("evaluate", ["--report", "{ro}/rep"], "--report"),
    ("evaluate", ["--report", "{ro}"], "--report"),
    ("evaluate", ["--max", "opis=1", "--junit", "{ro}/j.xml"], "--junit"),
    ("compare", ["--json", "{ro}/c.json"], "--json"),
    ("compare", ["--markdown", "{ro}/s.md"], "--markdown"),
    ("compare", ["--junit", "{ro}/j.xml", "--max", "opis=1"], "--junit"),
    ("compare", ["--report", "{ro}/rep"], "--report"),
    ("calibrate", ["--json", "{ro}/t.json"], "--json"),
    ("calibrate", ["--report", "{ro}/rep"], "--report"),
    ("calibrate", ["--method", "global", "--out", "{ro}/cal.json"], "--out"),
    ("gate", ["--max", "opis=1", "--json", "{ro}/g.json"], "--json"),
    ("gate", ["--max", "opis=1", "--markdown", "{ro}/g.md"], "--markdown"),
    ("gate", ["--max", "opis=1", "--junit", "{ro}/g.xml"], "--junit"),
]


@pytest.mark.parametrize("command,opts,option", CASES,
                         ids=[f"{c}{o[-2] if o[0] == '--max' else o[0]}-{i}"
                              for i, (c, o, _) in enumerate(CASES)])
def test_read_only_output_folder_fails_before_any_work(tmp_path, monkeypatch, capsys,
                                                       small_input, result_json, command,
                                                       opts, option):
    ro = tmp_path / "ro"
    ro.mkdir()
    _read_only(monkeypatch, ro)
    no_work = _NoWork(monkeypatch)
    inputs = {"evaluate": [str(small_input)], "compare": [str(small_input), str(small_input)],
              "calibrate": [str(small_input)], "gate": [str(result_json)]}[command]
    args = [command, *inputs, *[a.format(ro=ro) for a in opts]]
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert no_work.calls == []
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"Error: {option} {ro}"), err
    assert f"cannot write in folder {ro} (Read-only file system)" in lines[0]
    assert os.listdir(ro) == []


@pytest.mark.parametrize("opts,expected", [
    (["--json", "{tmp}/missing/r.json"], "--json {tmp}/missing/r.json: folder {tmp}/missing "
                                         "does not exist"),
    (["--curves", "{tmp}/file.txt/c.csv"], "--curves {tmp}/file.txt/c.csv: folder "
                                           "{tmp}/file.txt does not exist"),
    (["--report", "{tmp}/file.txt/rep"], "--report {tmp}/file.txt/rep: {tmp}/file.txt is not "
                                         "a folder"),
])
def test_missing_or_file_parent_fails_before_any_work(tmp_path, monkeypatch, capsys,
                                                      small_input, opts, expected):
    (tmp_path / "file.txt").write_text("a file, not a folder\n")
    no_work = _NoWork(monkeypatch)
    code = main(["evaluate", str(small_input), *[a.format(tmp=tmp_path) for a in opts]])
    err = capsys.readouterr().err
    assert code == 2 and no_work.calls == []
    assert err == f"Error: {expected.format(tmp=tmp_path)}\n"


def test_probe_leaves_nothing_behind(tmp_path):
    from opis_cli.io.output import check_output_folder, check_output_path

    check_output_path(tmp_path / "r.json", "--json")
    check_output_folder(tmp_path / "new" / "rep", "--report")
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- Dask: a worker lost mid-pass
# The rows given to the engine (a .npy input) are scattered to every worker:
# a worker killed (SIGKILL) as the counting pass starts costs its tasks, which
# the scheduler runs again on the other; the JSON is the same bytes. With
# every worker killed the scattered rows are gone: one line, exit 2, no file.


def _killing_progress(monkeypatch, client, how_many: int, killed: list, when: str = "counts"):
    """Progress callbacks (as the CLI's bar) that SIGKILL ``how_many`` worker
    processes when the pass ``when`` starts."""
    import contextlib

    import opis_cli.render.terminal as terminal

    pids = client.run(os.getpid)

    @contextlib.contextmanager
    def progress_bar(enabled):
        def callback(stage, done, total):
            if stage == when and not killed:
                for addr, pid in list(pids.items())[:how_many]:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(addr)
        yield callback

    monkeypatch.setattr(terminal, "progress_bar", progress_bar)


def _dask_input(tmp_path):
    rng = np.random.default_rng(8)
    n, d, classes = 2400, 12, 50
    y = rng.integers(0, classes, n)
    x = (rng.integers(-6, 7, (classes, d))[y] + rng.integers(-3, 4, (n, d))).astype(np.float32)
    x[7] = x[8]
    np.save(tmp_path / "e.npy", x)
    np.save(tmp_path / "l.npy", y.astype(str))
    return ["evaluate", str(tmp_path / "e.npy"), "--labels", str(tmp_path / "l.npy"),
            "--metric", "l2",
            "--engine", "dask", "-q"]


def _wait_for_workers(client, n: int):
    """The nannies restart killed workers; a test starts with ``n`` of them."""
    client.wait_for_workers(n, timeout=120)


@pytest.mark.slow
def test_dask_worker_killed_mid_pass_same_json(client, tmp_path, monkeypatch, capsys):
    _wait_for_workers(client, 2)
    args = _dask_input(tmp_path) + ["--scheduler", client.scheduler.address]
    assert main([*args, "--json", str(tmp_path / "calm.json")]) == 0, capsys.readouterr().err
    killed: list = []
    _killing_progress(monkeypatch, client, 1, killed)
    code = main([*args, "--json", str(tmp_path / "killed.json")])
    err = capsys.readouterr().err
    assert killed, "no worker was killed"
    assert code == 0, err
    a = (tmp_path / "calm.json").read_text().splitlines()
    b = (tmp_path / "killed.json").read_text().splitlines()
    assert len(a) == len(b)
    assert all(u.strip().startswith('"time": ') for u, v in zip(a, b) if u != v)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["counts", "diagnosis"])
def test_dask_pass_whose_data_was_forgotten_runs_again(client, tmp_path, monkeypatch, capsys,
                                                       stage):
    # under load, a worker killed mid-pass can leave a chunk's future
    # "already forgotten" by the scheduler: with a worker of the pass still
    # alive, the pass runs once more (its inputs scattered again), same bytes
    import distributed

    import opis_cli.engines.dask as dask_engine

    _wait_for_workers(client, 2)
    args = _dask_input(tmp_path) + ["--scheduler", client.scheduler.address]
    if stage == "diagnosis":
        args.append("--diagnose")
    assert main([*args, "--json", str(tmp_path / "calm.json")]) == 0, capsys.readouterr().err
    real = dask_engine._gather
    forgotten: list = []
    forced = stage

    def gather(futures, progress, stage, nq, rows_of):
        if stage == forced and not forgotten:
            forgotten.append(futures[0].key)
            for fut in futures:
                fut.release()
            raise distributed.client.FutureCancelledError(futures[0].key, "already forgotten")
        return real(futures, progress, stage, nq, rows_of)

    monkeypatch.setattr(dask_engine, "_gather", gather)
    code = main([*args, "--json", str(tmp_path / "again.json")])
    assert forgotten, f"the {stage} pass never ran"
    assert code == 0, capsys.readouterr().err
    _same_json_but_time(tmp_path / "calm.json", tmp_path / "again.json")


def _assert_lost_workers_line(code: int, err: str, tmp_path, files: list[str],
                              more: str = "") -> None:
    """Exit 2 with one line, ``Error: --engine dask: the cluster lost its workers
    during the run`` (then ``more``); the earlier out.json intact and no other
    file than ``files`` in ``tmp_path``."""
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("Error: --engine dask: the cluster lost its workers during "
                               "the run" + more), err
    assert (tmp_path / "out.json").read_text() == "earlier\n"
    assert sorted(os.listdir(tmp_path)) == files


@pytest.mark.slow
def test_dask_every_worker_killed_is_one_line_and_no_file(client, tmp_path, monkeypatch,
                                                           capsys):
    _wait_for_workers(client, 2)
    args = _dask_input(tmp_path) + ["--scheduler", client.scheduler.address]
    (tmp_path / "out.json").write_text("earlier\n")
    killed: list = []
    _killing_progress(monkeypatch, client, 2, killed)
    code = main([*args, "--json", str(tmp_path / "out.json")])
    err = capsys.readouterr().err
    assert len(killed) == 2
    _assert_lost_workers_line(code, err, tmp_path, ["e.npy", "l.npy", "out.json"])


# ---------------------------------------------------------------- Dask: the workers read shards
# On a Parquet input every task's data can be computed again from the files
# (the blocks and the layout are tasks whose arguments the scheduler keeps,
# the rows are read from the Parquet row groups): a worker killed as the
# first pass starts (its blocks just placed, each on one worker), or every
# worker killed and restarted by its nanny, costs nothing; the JSON is the
# same bytes. Workers that never come back: one line, exit 2, no file.


def _shard_input(tmp_path):
    rng = np.random.default_rng(9)
    n, d, classes = 1200, 12, 40
    y = rng.integers(0, classes, n)
    x = (rng.integers(-6, 7, (classes, d))[y] + rng.integers(-3, 4, (n, d))).astype(np.float32)
    x[7] = x[8]
    y = y.astype(str)
    y[3] = "lonely"
    emb = pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), d)
    pq.write_table(pa.table({"embedding": emb, "label": pa.array(y)}), tmp_path / "a.parquet",
                   row_group_size=100)
    # --worker-mib 256 is below the formula's fixed part: blocks of 256 rows,
    # 5 blocks, 25 pair tasks a pass
    return ["evaluate", str(tmp_path / "a.parquet"), "--metric", "l2", "--engine", "dask",
            "--worker-mib", "256", "-q"]


def _same_json_but_time(a: Path, b: Path):
    u, v = a.read_text().splitlines(), b.read_text().splitlines()
    assert len(u) == len(v)
    assert all(p.strip().startswith('"time": ') for p, q in zip(u, v) if p != q)


@contextlib.contextmanager
def _own_cluster(**config):
    """A local cluster of two worker processes for one test (the conftest
    one's workers were killed by the tests before), under Dask ``config``."""
    import dask
    import distributed

    with dask.config.set(config):
        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
            env={"NUMBA_NUM_THREADS": "1"})
    try:
        with distributed.Client(cluster) as client:
            client.wait_for_workers(2, timeout=120)
            yield cluster, client
    finally:
        cluster.close()


@pytest.mark.slow
@pytest.mark.parametrize("how_many", [1, 2], ids=["one-worker", "every-worker"])
def test_dask_shards_worker_killed_mid_pass_same_json(tmp_path, monkeypatch, capsys, how_many):
    args = _shard_input(tmp_path)
    with _own_cluster() as (cluster, client):
        args += ["--scheduler", cluster.scheduler_address]
        assert main([*args, "--json", str(tmp_path / "calm.json")]) == 0, \
            capsys.readouterr().err
        assert json.loads((tmp_path / "calm.json").read_text())["provenance"][
            "engine_notes"]["blocks"] == 5
        killed: list = []
        # the first pass: its blocks were just placed, each on one worker
        _killing_progress(monkeypatch, client, how_many, killed, "order statistic")
        code = main([*args, "--json", str(tmp_path / "killed.json")])
        err = capsys.readouterr().err
    assert len(killed) == how_many
    assert code == 0, err
    _same_json_but_time(tmp_path / "calm.json", tmp_path / "killed.json")


@pytest.mark.slow
def test_dask_shards_no_worker_left_is_one_line_and_no_file(tmp_path, monkeypatch, capsys):
    import opis_cli.render.terminal as terminal

    args = _shard_input(tmp_path)
    (tmp_path / "out.json").write_text("earlier\n")
    with _own_cluster(**{"distributed.scheduler.no-workers-timeout": "1s"}) as (cluster, _):
        args += ["--scheduler", cluster.scheduler_address]
        nannies = list(cluster.workers.values())
        killed: list = []

        @contextlib.contextmanager
        def progress_bar(enabled):
            def callback(stage, done, total):
                if stage == "order statistic" and not killed:
                    for nanny in nannies:  # lost for good: no nanny restarts it
                        nanny.close_gracefully()
                        os.kill(nanny.pid, signal.SIGKILL)
                        killed.append(nanny.pid)
            yield callback

        monkeypatch.setattr(terminal, "progress_bar", progress_bar)
        code = main([*args, "--json", str(tmp_path / "out.json")])
        err = capsys.readouterr().err
    assert len(killed) == 2
    _assert_lost_workers_line(code, err, tmp_path, ["a.parquet", "out.json"],
                              ", and none came back")
