"""Shared helpers of the scale benchmarks: synthetic data and child processes.

Each measured run happens in a fresh child process so that its peak memory
(``ru_maxrss`` of the child) belongs to that run alone; the child prints one
JSON line with its timings and peak, which the parent collects.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np


def synthetic(n: int, d: int, rows_per_class: int = 20, spread: tuple[float, float] = (0.5, 2.0),
              seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around random class centres, per-class noise ``spread``
    (relative to the centres' scale), built in float32 chunks. Labels int64."""
    rng = np.random.default_rng(seed)
    k = max(2, n // rows_per_class)
    centres = rng.standard_normal((k, d)).astype(np.float32)
    scale = rng.uniform(*spread, k).astype(np.float32)
    y = rng.integers(0, k, n)
    x = np.empty((n, d), np.float32)
    for s in range(0, n, 65536):
        e = min(n, s + 65536)
        block = centres[y[s:e]] + scale[y[s:e], None] * rng.standard_normal((e - s, d),
                                                                           dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        x[s:e] = block
    return x, y


def low_rank(n: int, d: int, rows_per_class: int = 20, latent: int = 16,
             spread: tuple[float, float] = (0.5, 1.5), noise: float = 0.1,
             seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Classes clustered in a ``latent``-dimensional space, embedded linearly in
    ``d`` dimensions plus a little isotropic noise: closer to real embeddings
    (low intrinsic dimension) than :func:`synthetic`, and much easier for an
    approximate nearest-neighbour index."""
    rng = np.random.default_rng(seed)
    k = max(2, n // rows_per_class)
    centres = rng.standard_normal((k, latent)).astype(np.float32)
    scale = rng.uniform(*spread, k).astype(np.float32)
    basis = (rng.standard_normal((latent, d)) / np.sqrt(latent)).astype(np.float32)
    y = rng.integers(0, k, n)
    x = np.empty((n, d), np.float32)
    for s in range(0, n, 65536):
        e = min(n, s + 65536)
        z = centres[y[s:e]] + scale[y[s:e], None] * rng.standard_normal((e - s, latent),
                                                                       dtype=np.float32)
        block = z @ basis + noise * rng.standard_normal((e - s, d), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        x[s:e] = block
    return x, y


def peak_mib() -> float:
    """Peak resident memory of this process so far, MiB (Linux: ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(script: str, args: list[str], timeout: float | None = None) -> dict:
    """Run ``python script args`` and return the JSON it prints last."""
    cmd = [sys.executable, script, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def machine() -> str:
    """One line describing the machine: CPU model, cores, memory, load."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as fh:
            mem = int(fh.readline().split()[1]) / 2**20
    except (OSError, ValueError):
        mem = float("nan")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{model}, {os.cpu_count()} cores, {mem:.0f} GiB, load average {load:.1f} "
            f"at start, Python {platform.python_version()}")


def best_of(fn, repeat: int) -> tuple[float, float]:
    """Best wall-clock and best CPU seconds (all threads) over ``repeat`` runs.

    CPU seconds are less disturbed by other processes on a shared machine;
    both ratios are printed.
    """
    wall = cpu = float("inf")
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall = min(wall, time.perf_counter() - t)
        cpu = min(cpu, time.process_time() - c)
    return wall, cpu


def timed_child(cmd: list[str], env: dict | None = None,
                cwd: str | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + system from ``wait4``) of one child
    process, which must succeed (else its stderr's tail ends the benchmark)."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                            cwd=cwd)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err[-3000:]}")
    return wall, usage.ru_utime + usage.ru_stime
