"""Shared by test_report.py and test_report_browser.py (not a test module).

* small synthetic inputs whose labels try to break the HTML,
* the 10k-class result and its report (the session fixture ``big_report`` in
  conftest.py renders it once),
* ``figure_data``: what a matplotlib figure shows, as plain data, so two
  figures can be compared without looking at pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from opis_cli import evaluate

REPO = Path(__file__).resolve().parents[1]
WEAK = REPO / "sample_data" / "digits_weak.parquet"
STRONG = REPO / "sample_data" / "digits_strong.parquet"

#: labels that break naive HTML, JSON-in-script or matplotlib mathtext
NASTY = [
    "<script>alert(1)</script>",
    "</script><img src=x onerror=alert(2)>",
    "a&b \"double\" 'single'",
    r"$\frac{$ math",
    "plain",
    "\u00fcn\u00efc\u00f6d\u00e9 \u2713",
]
#: a single-row class: excluded (no positive pair), and listed in the report
NASTY_SINGLETON = "<b>lonely</b>"


def clustered(labels_per_class: list[str], rows: int = 4, dim: int = 8, seed: int = 0,
              singletons: tuple[str, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian clusters with a different spread per class (so OPIS is not ~0)."""
    rng = np.random.default_rng(seed)
    C = len(labels_per_class)
    centers = rng.normal(size=(C, dim))
    spread = np.linspace(0.3, 1.3, C)
    X = np.repeat(centers, rows, axis=0) + np.repeat(spread, rows)[:, None] * rng.normal(
        size=(C * rows, dim))
    labels = list(np.repeat(np.array(labels_per_class, dtype=object), rows))
    if singletons:
        X = np.vstack([X, rng.normal(size=(len(singletons), dim))])
        labels += list(singletons)
    return X.astype(np.float32), np.array(labels, dtype=object)


def nasty_result(metric: str = "cosine"):
    """Six classes with hostile labels plus an excluded singleton."""
    X, y = clustered(NASTY, rows=5, singletons=(NASTY_SINGLETON,))
    return evaluate(X, y, metric=metric, num_thresholds=21, timestamp=False)


def many_result(n_classes: int = 80):
    """More classes than the utility figure draws as lines (density mode)."""
    X, y = clustered([f"c{i:03d}" for i in range(n_classes)], rows=3, seed=1)
    return evaluate(X, y, num_thresholds=41, timestamp=False)


BIG_CLASSES = 10_000


def big_files(folder: Path) -> tuple[Path, Path]:
    """(result JSON, curves Parquet) of 10k classes with 2 rows each, written into ``folder``.

    One row of each class is a query, the other in the gallery, which keeps
    the exact engine at 10k x 10k pairs. A few labels are hostile, to check
    escaping at scale.
    """
    from opis_cli.io import write_curves
    from opis_cli.io.output import write_text

    result_path, curves_path = folder / "big.json", folder / "big_curves.parquet"
    rng = np.random.default_rng(7)
    sizes = np.full(BIG_CLASSES, 2)
    names = np.array([f"class_{i:05d}" for i in range(BIG_CLASSES)], dtype=object)
    names[:len(NASTY)] = NASTY
    labels = np.repeat(names, sizes)
    first = np.zeros(len(labels), bool)
    first[np.r_[0, np.cumsum(sizes)[:-1]]] = True
    spread = rng.uniform(0.3, 1.2, BIG_CLASSES)
    X = (np.repeat(rng.normal(size=(BIG_CLASSES, 16)), sizes, axis=0)
         + np.repeat(spread, sizes)[:, None] * rng.normal(size=(len(labels), 16)))
    result = evaluate(X.astype(np.float32), labels, is_query=first, is_gallery=~first,
                      timestamp=False)
    write_text(result_path, result.to_json())
    write_curves(curves_path, result)
    return result_path, curves_path


def render_big_report(folder: Path) -> Path:
    """``opis report`` on the 10k-class result, in ``folder``/report; returns that folder.

    The session fixture ``big_report`` (conftest.py) calls it once: both report
    test modules read the same page.
    """
    from opis_cli.cli import main

    result_path, curves_path = big_files(folder)
    out = folder / "report"
    rc = main(["report", str(result_path), "--curves", str(curves_path), "--out", str(out), "-q"])
    assert rc == 0
    return out


# -- figures as data ------------------------------------------------------------
def _patch(p):
    kind = type(p).__name__
    if kind == "StepPatch":
        values, edges, baseline = p.get_data()
        return kind, np.asarray(values, float), np.asarray(edges, float)
    if kind == "Rectangle":
        return kind, (p.get_x(), p.get_y(), p.get_width(), p.get_height()), p.get_facecolor()
    if hasattr(p, "get_xy"):
        return kind, np.asarray(p.get_xy(), float)
    return (kind,)


def _array(c):
    a = c.get_array()
    return None if a is None else np.ma.filled(np.ma.asarray(a, dtype=float), np.nan)


def figure_data(fig) -> dict:
    """Everything a figure shows (texts, line data, points, bars), without pixels."""
    out = {"suptitle": fig._suptitle.get_text() if fig._suptitle is not None else None,
           "size": tuple(fig.get_size_inches()), "axes": []}
    for ax in fig.axes:
        legend = ax.get_legend()
        out["axes"].append({
            "title": ax.get_title(loc="left"), "xlabel": ax.get_xlabel(),
            "ylabel": ax.get_ylabel(), "xlim": ax.get_xlim(), "ylim": ax.get_ylim(),
            "lines": [(ln.get_gid(), ln.get_label(), ln.get_color(),
                       np.asarray(ln.get_xdata(), float), np.asarray(ln.get_ydata(), float))
                      for ln in ax.lines],
            "collections": [(c.get_gid(), type(c).__name__, np.asarray(c.get_offsets(), float),
                             _array(c)) for c in ax.collections],
            "patches": [(p.get_gid(), _patch(p)) for p in ax.patches],
            "texts": [t.get_text() for t in ax.texts],
            "yticklabels": [t.get_text() for t in ax.get_yticklabels()],
            "legend": [t.get_text() for t in legend.get_texts()] if legend else [],
        })
    return out


def assert_same(a, b, path: str = "figure") -> None:
    """Exact, NaN-aware equality of nested figure data."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), path
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{path}: {len(a)} vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.shape == b.shape, path
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), path
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def lines(fig, gid: str, ax: int = 0) -> list:
    return [ln for ln in fig.axes[ax].lines if ln.get_gid() == gid]


def collections(fig, gid: str, ax: int = 0) -> list:
    return [c for c in fig.axes[ax].collections if c.get_gid() == gid]
