"""The compile lock (``_numba_cache.compile_lock``, ``_jit.locked``): numba loads
or compiles an opis kernel in one process at a time per cache folder, since
its cache is not safe for two processes compiling one kernel at once (it
writes a kernel's index before its data: numba issue 10128).

Each test runs a small script in a child process with its own, empty
``NUMBA_CACHE_DIR`` (numba caches only kernels defined in a file).
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: numba's own compile wrapped before the kernels are made, so that it sees
#: whether the lock is held, from a second open file description (the flock
#: locks of two descriptions conflict, even in one process); ``outer`` calls
#: ``inner``, which is compiled inside ``outer``'s compile (re-entered)
SCRIPT = r'''
import fcntl, os
import numba.core.dispatcher as d
from opis_cli._numba_cache import lock_path

def held(path):
    if not os.path.exists(path):
        return False
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)

seen = []
real = d.Dispatcher.compile

def spy(self, sig):
    seen.append((self.py_func.__name__, held(lock_path(self))))
    return real(self, sig)

d.Dispatcher.compile = spy
from opis_cli.engines._jit import kernel

@kernel
def inner(x):
    return x + 1

@kernel
def outer(x):
    return inner(x) * 2

assert outer(3) == 8
print(sorted(set(seen)), held(lock_path(outer)))
'''

#: one kernel, compiled (or loaded) once; prints its lock file, then the result
COMPILE = r'''
from opis_cli.engines._jit import kernel
from opis_cli._numba_cache import lock_path

@kernel
def f(x):
    return x - 1

print(lock_path(f), flush=True)
print(f(2), flush=True)
'''


def _child(tmp_path: Path, name: str, text: str) -> subprocess.Popen:
    script = tmp_path / name
    script.write_text(text)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"),
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_kernels_compile_under_the_lock_and_release_it(tmp_path):
    child = _child(tmp_path, "nested.py", SCRIPT)
    out, err = child.communicate(timeout=300)
    assert child.returncode == 0, err
    # both kernels compiled with the lock held (inner inside outer), free after
    assert out.split("\n")[0] == "[('inner', True), ('outer', True)] False", (out, err)


def _blocked_on_flock(pid: int) -> bool:
    """Whether process ``pid`` waits for an flock (Linux: a ``->`` line of /proc/locks)."""
    for line in Path("/proc/locks").read_text().splitlines():
        f = line.split()
        if "->" in f and "FLOCK" in f and str(pid) in f:
            return True
    return False


def test_a_second_process_waits_for_the_first_then_loads_its_kernel(tmp_path):
    # the first run makes the cache folder and names the lock file
    first = _child(tmp_path, "one.py", COMPILE)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    lock, result = out.split()
    assert result == "1" and Path(lock).parent.is_dir()
    for f in Path(lock).parent.glob("*.nb*"):  # cold again: the next run compiles
        f.unlink()
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # this process compiles, as far as the child can tell
    try:
        second = _child(tmp_path, "one.py", COMPILE)
        deadline = time.monotonic() + 300
        while not _blocked_on_flock(second.pid):
            assert second.poll() is None, "compiled without waiting: " + second.stderr.read()
            assert time.monotonic() < deadline, "never waited for the lock"
            time.sleep(0.05)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0 and out.split()[1] == "1", err


def test_a_child_forked_while_the_lock_is_held_starts_without_it(tmp_path):
    from types import SimpleNamespace

    from opis_cli import _numba_cache as nc

    index = tmp_path / "k.nbi"
    disp = SimpleNamespace(_cache=SimpleNamespace(_cache_file=SimpleNamespace(
        _index_path=str(index))))
    with nc.compile_lock(disp):
        assert nc._held["depth"] == 1 and nc._held["fd"] is not None
        pid = os.fork()
        if pid == 0:  # the child: no depth, a free thread lock, the parent's flock kept
            ok = nc._held == {"depth": 0, "fd": None} and nc._THREADS.acquire(blocking=False)
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        fd = os.open(tmp_path / nc.LOCK_NAME, os.O_RDWR)
        try:  # still held by this process after the child exited
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                raise AssertionError("the child released the parent's lock")
            except BlockingIOError:
                pass
        finally:
            os.close(fd)
    assert nc._held == {"depth": 0, "fd": None}
