"""Figures of a finished result (matplotlib, headless).

This is the only module of the package that imports matplotlib, and it does
so lazily, inside the functions. Figures are built with the object-oriented
API on the Agg canvas (no ``pyplot``, no global backend switch), so rendering
works without a display and leaves a caller's matplotlib state alone.

Every function here only *reads* an :class:`~opis_cli.results.EvaluationResult`
(and, for the per-class utility curves, a :class:`~opis_cli.results.Curves`)
and returns a ``matplotlib.figure.Figure``; nothing is recomputed. The
``draw_*`` functions draw the same figures into a caller's axes (the report
and the notebook methods share them). Artists that
carry data have a ``gid`` (e.g. ``"mean-curve"``, ``"recommended-threshold"``)
so tests can find them by name rather than by pixels.

Distances are what the result holds: smaller = more similar, a pair is
accepted at threshold ``t`` when ``d <= t`` (SPEC 2).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..escape import visible
from ..format import pct

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

# The annotations name opis_cli.results' EvaluationResult, ConsistencyBlock,
# ClassSummary and Curves as strings without importing them: the result's own
# notebook methods (``result.plot_utility(ax=...)``) draw with the ``draw_*``
# functions here (through opis_cli.render.notebook), so an import of results
# would close a cycle.

#: figure names, in the order the report shows them
FIGURES = ("utility", "far_frr", "best_thresholds", "distances", "contributions", "fairness")
#: the per-group figure, drawn when the result has a group block
GROUP_FIGURES = ("group_utility",)
#: the DET curve, drawn when the result has the verification view (SPEC 14)
VERIFICATION_FIGURES = ("det",)

DPI = 110
#: up to this many rows, every per-row utility curve is drawn as a line
MAX_LINES = 60
#: above MAX_LINES, this many curves (evenly spread over the ranking) are drawn on the density
SAMPLE_LINES = 30
#: up to this many classes the FAR/FRR plot is a scatter; above it, a hexbin density
MAX_POINTS = 2000
#: bars in the OPIS contribution chart
TOP_CONTRIBUTIONS = 20
#: longest label drawn in a figure (longer ones are shortened with an ellipsis)
LABEL_CHARS = 32

# One colour per meaning, the same in every figure.
C_MEAN = "#111827"
C_WORST = "#dc2626"
C_WORST_LIGHT = "#f87171"
C_CLASS = "#6b7280"
C_THRESHOLD = "#059669"
C_POS = "#2563eb"
C_NEG = "#ea580c"
C_RANGE = "#facc15"
C_GOOD = "#3b82f6"
C_NOTE = "#92400e"

UTILITY_NAMES = {
    "tpr-tnr": "F-beta of TPR and TNR",
    "precision-recall": "F-beta of precision and recall",
}


# -- small helpers --------------------------------------------------------------
def distance_unit(metric: str) -> str:
    """The axis unit for a metric: ``"cosine distance"`` or ``"L2 distance"``."""
    return {"cosine": "cosine distance", "l2": "L2 distance"}.get(metric, f"{metric} distance")


def short_label(label: str, n: int = LABEL_CHARS) -> str:
    """A label shortened to ``n`` characters for drawing (tables show it in full)."""
    label = visible(label)  # control and bidi characters drawn as escapes (render.escape)
    return label if len(label) <= n else label[: n - 1] + "\u2026"


def _noun(level: str, n: int = 2) -> str:
    word = "class" if level == "class" else "group"
    return word if n == 1 else word + ("es" if level == "class" else "s")


def _block(result: "EvaluationResult", level: str) -> "ConsistencyBlock":
    if level == "class":
        return result.classes
    if level == "group" and result.groups is not None:
        return result.groups
    raise ValueError(f"the result has no {level!r} block")


def _new_figure(width: float = 9.0, height: float = 5.0) -> "Figure":
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _titles(fig: "Figure", ax, title: str, subtitle: str = "") -> None:
    """Bold title for the figure, a grey line of key facts above the axes."""
    fig.suptitle(title, x=0.01, ha="left", fontsize=13, fontweight="bold")
    if subtitle:
        ax.set_title(subtitle, loc="left", fontsize=9, color="#4b5563")


def _user_text(text) -> None:
    """User data is drawn literally: a ``$`` in a label is not mathtext."""
    text.set_parse_math(False)


def share_tick(v: float) -> str:
    """A share as a tick label: ``100%``, ``10%``, ``1%``, ``0.1%`` (never ``1e+02%``)."""
    p = 100.0 * v
    if p >= 9.95:
        return f"{p:.0f}%"
    return f"{p:.2g}%"


def _percent_axis(axis, decimals: int | None = None) -> None:
    from matplotlib.ticker import PercentFormatter

    axis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=decimals))


def _padded(lo: float, hi: float, frac: float = 0.02) -> tuple[float, float]:
    """Axis limits a little wider than ``[lo, hi]`` so lines on the ends stay visible."""
    pad = frac * ((hi - lo) or abs(hi) or 1.0)
    return lo - pad, hi + pad


def _legend(ax, handles=None, ncol: int = 2, fontsize: float = 8):
    """The legend under the axes and their x label, so it never hides data.

    Call it after ``set_xlabel``: the legend is dropped below the tick labels and
    every line of the x label by a fixed distance in points (not a fraction of
    the axes, which a short figure would make too small); constrained layout
    then makes room for it.
    """
    from matplotlib.transforms import ScaledTranslation

    kw = {} if handles is None else {"handles": handles}
    ticks = ax.xaxis.get_ticklabels()
    tick_pt = ticks[0].get_size() if ticks else 10.0
    label = ax.xaxis.label
    lines = label.get_text().count("\n") + 1 if label.get_text().strip() else 0
    drop_pt = tick_pt + 9 + lines * 1.25 * label.get_size() + 6
    shift = ScaledTranslation(0, -drop_pt / 72, ax.figure.dpi_scale_trans)
    return ax.legend(loc="upper center", bbox_to_anchor=(0.5, 0),
                     bbox_transform=ax.transAxes + shift, ncol=ncol, fontsize=fontsize,
                     frameon=False, **kw)


def _style(ax) -> None:
    ax.grid(True, color="#e5e7eb", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def aligned_curves(block: "ConsistencyBlock", curves: "Curves") -> np.ndarray:
    """Utility curves (C, K) in the order of ``block.per_class`` (worst first).

    The figures only depend on this order, never on the order of the table
    the curves came from, so ``opis evaluate --report`` and
    ``opis report --curves`` draw the same figure.
    """
    pos = {lab: i for i, lab in enumerate(curves.labels)}
    missing = [c.label for c in block.per_class if c.label not in pos]
    if missing:
        raise ValueError(f"no utility curve for {len(missing)} row(s), e.g. {missing[0]!r}")
    return np.asarray(curves.utility, dtype=np.float64)[[pos[c.label] for c in block.per_class]]


def sample_rows(n: int, k: int = SAMPLE_LINES) -> np.ndarray:
    """``k`` row indices evenly spread over ``0..n-1`` (worst and best included)."""
    if n <= k:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, k)).astype(np.int64))


# -- 1. utility curves ----------------------------------------------------------
#: utility bins of the per-row density (drawn above MAX_LINES rows)
DENSITY_BINS = 40


def _utility_floor(block: "ConsistencyBlock", U: "np.ndarray | None") -> float:
    """Bottom of the utility axis: a multiple of 0.1 just below what matters.

    Zooming in from below keeps a tight spread visible; the top stays at 1.
    What matters: the mean and worst-set curves and the per-row curves (all of
    them when drawn as lines, the 1st percentile when drawn as a density).
    """
    parts = [np.asarray(block.mean_utility, float), np.asarray(block.worst_mean_utility, float)]
    if U is not None and U.size:
        parts.append(U.min(axis=0) if U.shape[0] <= MAX_LINES else np.percentile(U, 1, axis=0))
    drawn = np.concatenate(parts)
    drawn = drawn[np.isfinite(drawn)]
    if not drawn.size:
        return 0.0
    return float(max(0.0, np.floor(10 * (drawn.min() - 0.03)) / 10))


def _draw_density(ax, th: np.ndarray, U: np.ndarray, worst: np.ndarray, ybottom: float,
                  noun: str) -> list:
    """Too many rows for a line each: the share of rows per utility cell at
    each threshold (log colour scale), the 5th and 95th percentiles, and a
    sample of the rows' curves, into ``ax``; returns their legend handles."""
    from matplotlib.colors import LogNorm
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter

    C = U.shape[0]
    # Share of rows per utility bin at each threshold, over the visible utility range
    # (rows below it are not drawn; the 5th percentile line shows how far down they go).
    bins = np.linspace(ybottom, 1.0, DENSITY_BINS + 1)
    bins[-1] = np.nextafter(1.0, 2.0)  # utility 1 falls into the top bin
    dens = np.stack([np.histogram(U[:, k], bins=bins)[0] for k in range(len(th))],
                    axis=1) / C
    step = (th[-1] - th[0]) / max(len(th) - 1, 1)
    xedges = np.concatenate([[th[0] - step / 2], (th[:-1] + th[1:]) / 2,
                             [th[-1] + step / 2]])
    mesh = ax.pcolormesh(xedges, bins, np.ma.masked_equal(dens, 0.0), cmap="Blues",
                         norm=LogNorm(vmin=1.0 / C, vmax=1.0), shading="flat",
                         rasterized=True, zorder=1, gid="class-density")
    cb = ax.figure.colorbar(mesh, ax=ax, pad=0.01, fraction=0.04)
    cb.set_label(f"share of {noun} in the cell (log scale)", fontsize=8)
    cb.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: share_tick(v)))
    for q, name in ((5, "p5"), (95, "p95")):
        ax.plot(th, np.percentile(U, q, axis=0), color="#1e3a8a", lw=1.2, ls=":",
                zorder=3, gid=f"class-{name}")
    handles = [Line2D([], [], color="#1e3a8a", lw=1.2, ls=":",
                      label=f"5th / 95th percentile of {C:,} {noun}")]
    rows = sample_rows(C)
    for i in rows:
        ax.plot(th, U[i], color=C_WORST_LIGHT if worst[i] else C_CLASS, lw=0.7,
                alpha=0.5, zorder=2, rasterized=True, gid="class-curve")
    handles.append(Line2D([], [], color=C_CLASS, lw=0.7, alpha=0.6,
                          label=f"{len(rows)} sampled {noun} (worst to best)"))
    return handles


def draw_utility(ax, result: "EvaluationResult", curves: "Curves | None" = None, *,
                 level: str = "class") -> tuple[str, str]:
    """Draw the per-row utility curves (:func:`utility_figure`) into ``ax``;
    returns the figure's ``(title, subtitle)``."""
    from matplotlib.lines import Line2D

    block = _block(result, level)
    th = np.asarray(result.thresholds, dtype=np.float64)
    rt = block.recommended_threshold
    per = block.per_class
    worst = np.array([c.worst for c in per], dtype=bool)
    n_worst = int(worst.sum())
    eps = f"{100 * result.epsilon:g}%"
    one, noun = _noun(level, 1), _noun(level)
    U = aligned_curves(block, curves) if curves is not None else None
    ybottom = _utility_floor(block, U)
    _style(ax)
    extra_handles = []
    note = ""
    if U is not None and U.shape[0] <= MAX_LINES:
        C = U.shape[0]
        for i in range(C):
            ax.plot(th, U[i], color=C_WORST_LIGHT if worst[i] else C_CLASS,
                    lw=1.0, alpha=0.75 if worst[i] else 0.5, zorder=2, gid="class-curve")
        extra_handles.append(Line2D([], [], color=C_CLASS, lw=1, alpha=0.6,
                                    label=f"each {one} ({C})"))
        if n_worst:
            extra_handles.append(Line2D([], [], color=C_WORST_LIGHT, lw=1,
                                        label=f"each {one} in the worst {eps}"))
    elif U is not None:
        extra_handles += _draw_density(ax, th, U, worst, ybottom, noun)
    else:
        note = (f"\nPer-{one} curves are not in the result JSON: pass --curves CURVES "
                "(the table from opis evaluate --curves) to draw them.")
    ax.plot(th, block.mean_utility, color=C_MEAN, lw=2.6, zorder=5, gid="mean-curve",
            label=f"mean over {block.evaluated:,} {_noun(level)}")
    if len(block.worst_mean_utility) == len(th):
        ax.plot(th, block.worst_mean_utility, color=C_WORST, lw=2.6, ls="--", zorder=5,
                gid="worst-curve",
                label=f"mean of the worst {eps} ({n_worst:,} {_noun(level, n_worst)})")
    ax.axvline(rt.value, color=C_THRESHOLD, lw=2, ls="-.", zorder=6, gid="recommended-threshold",
               label=f"recommended threshold {rt.value:.4g} ({rt.policy})")
    ax.set_xlim(*_padded(th[0], th[-1]))
    ax.set_ylim(ybottom - 0.01, 1.03)
    unit = distance_unit(result.metric)
    ax.set_xlabel(f"threshold ({unit}; pairs at or below it are accepted)")
    ax.set_ylabel(f"utility ({UTILITY_NAMES.get(result.utility, result.utility)}, "
                  f"beta {result.beta:g})")
    cr = result.calibration_range
    handles, _ = ax.get_legend_handles_labels()
    _legend(ax, handles + extra_handles)
    return (f"Per-{_noun(level, 1)} utility across the calibration range",
            f"OPIS {block.opis:.4g}, {eps}-OPIS {block.epsilon_opis:.4g}.  Calibration range "
            f"{cr.lower:.4g} to {cr.upper:.4g} (global FAR {pct(cr.far_lower)} to "
            f"{pct(cr.far_upper)}).\nThe wider the curves spread, the less one threshold "
            f"suits every {_noun(level, 1)}." + note)


def utility_figure(result: "EvaluationResult", curves: "Curves | None" = None, *,
                   level: str = "class") -> "Figure":
    """Per-row utility against threshold over the calibration range.

    Draws the mean curve ``Ubar(t)``, the mean of the worst-epsilon set W and
    the recommended threshold from the result; the per-row curves come from
    ``curves`` (the ``--curves`` table or the in-process result). Up to
    ``MAX_LINES`` rows every curve is a line (W in red); beyond that a density
    of the curves (share of rows per utility bin at each threshold), the 5th
    and 95th percentiles and ``SAMPLE_LINES`` sampled curves. Without curves
    the figure says how to get them.
    """
    fig = _new_figure(9.0, 5.2)
    ax = fig.add_subplot()
    title, subtitle = draw_utility(ax, result, curves, level=level)
    _titles(fig, ax, title, subtitle)
    return fig


# -- 2. FAR and FRR per class at the threshold ---------------------------------
def draw_far_frr(ax, result: "EvaluationResult", *, level: str = "class") -> tuple[str, str]:
    """Draw the per-row FAR and FRR at the threshold (:func:`far_frr_figure`) into
    ``ax``; returns the figure's ``(title, subtitle)``."""
    block = _block(result, level)
    rt = block.recommended_threshold
    per = block.per_class
    far = np.array([c.far_at_threshold for c in per], dtype=np.float64)
    frr = np.array([c.frr_at_threshold for c in per], dtype=np.float64)
    worst = np.array([c.worst for c in per], dtype=bool)
    C = len(per)
    fig = ax.figure
    _style(ax)
    noun, eps = _noun(level), f"{100 * result.epsilon:g}%"
    xmax = float(np.nanmax(np.r_[far, 2 * rt.far, rt.far])) * 1.08 or 1.0
    ymax = min(1.0, float(np.nanmax(np.r_[frr, rt.frr])) * 1.08) or 1.0
    if C <= MAX_POINTS:
        alpha = float(np.clip(40.0 / np.sqrt(max(C, 1)), 0.25, 0.85))
        size = float(np.clip(600.0 / np.sqrt(max(C, 1)), 8, 60))
        ax.scatter(far[~worst], frr[~worst], s=size, color=C_GOOD, alpha=alpha, lw=0,
                   rasterized=C > 500, zorder=3, gid="class-points",
                   label=f"{noun} ({int((~worst).sum()):,})")
        ax.scatter(far[worst], frr[worst], s=size, color=C_WORST, alpha=min(1.0, alpha + 0.1),
                   lw=0, rasterized=C > 500, zorder=4, gid="worst-points",
                   label=f"worst {eps} by mean utility ({int(worst.sum()):,})")
        if C <= 200:  # name every row when there are few, else the five worst
            for c in (per if C <= 15 else per[:5]):
                t = ax.annotate(short_label(c.label, 24), (c.far_at_threshold, c.frr_at_threshold),
                                xytext=(5, 4), textcoords="offset points", fontsize=7.5,
                                color="#7f1d1d" if c.worst else "#1f2937", zorder=6,
                                gid="point-label")
                _user_text(t)
    else:
        hb = ax.hexbin(far, frr, gridsize=45, bins="log", mincnt=1, cmap="Blues",
                       extent=(0, xmax, 0, ymax), linewidths=0.2, zorder=3, rasterized=True,
                       gid="class-density")
        cb = fig.colorbar(hb, ax=ax, pad=0.01, fraction=0.04)
        cb.set_label(f"{noun} per cell (log scale)", fontsize=8)
    ax.axvline(rt.far, color=C_THRESHOLD, lw=1, ls="--", zorder=2, gid="global-far")
    ax.axhline(rt.frr, color=C_THRESHOLD, lw=1, ls="--", zorder=2, gid="global-frr")
    ax.plot([rt.far], [rt.frr], marker="*", ms=17, color=C_THRESHOLD, mec="white", mew=1,
            ls="none", zorder=7, gid="global-point",
            label=f"global: FAR {pct(rt.far)}, FRR {pct(rt.frr)}")
    ax.axvline(2 * rt.far, color=C_MEAN, lw=1, ls=":", zorder=2, gid="far-2x",
               label=f"2x global FAR ({pct(rt.fraction_far_above_2x, '.1f')} of {noun} beyond)")
    ax.set_xlim(-0.015 * xmax, xmax)  # points (and hexagons) on 0 stay whole
    ax.set_ylim(-0.015 * ymax, ymax * 1.015)
    _percent_axis(ax.xaxis)
    _percent_axis(ax.yaxis)
    one = _noun(level, 1)
    ax.set_xlabel(f"false accept rate of the {one} (FAR: its negative pairs accepted)")
    ax.set_ylabel(f"false reject rate of the {one}\n(FRR: its positive pairs rejected)")
    _legend(ax)
    fs, rs = rt.far_spread, rt.frr_spread
    return (f"Per-{one} FAR and FRR at the recommended threshold "
            f"{rt.value:.4g} ({distance_unit(result.metric)})",
            f"{C:,} {noun}.  FAR 5th to 95th percentile {pct(fs.p5, '.1f')} to "
            f"{pct(fs.p95, '.1f')} (global {pct(rt.far, '.1f')});  FRR {pct(rs.p5, '.1f')} to "
            f"{pct(rs.p95, '.1f')} "
            f"(global {pct(rt.frr, '.1f')}).")


def far_frr_figure(result: "EvaluationResult", *, level: str = "class") -> "Figure":
    """Each row's FAR (x) and FRR (y) at the recommended threshold.

    The global operating point is a star with cross-hairs; a dotted line marks
    twice the global FAR. Up to ``MAX_POINTS`` rows this is a scatter (W in
    red, the five worst labelled when there are few rows), beyond it a hexbin
    density of rows.
    """
    fig = _new_figure(9.0, 5.4)
    ax = fig.add_subplot()
    title, subtitle = draw_far_frr(ax, result, level=level)
    _titles(fig, ax, title, subtitle)
    return fig


# -- 3. each class's own best threshold ---------------------------------------
#: up to this many rows the best thresholds are drawn as one labelled dot per row
MAX_DOTS = 40


def best_threshold_figure(result: "EvaluationResult", *, level: str = "class") -> "Figure":
    """Each row's own best grid threshold against the global one.

    Up to ``MAX_DOTS`` rows: one labelled dot per row (sorted by its best
    threshold); beyond that a histogram with bins centred on grid thresholds.
    The calibration range ends are marked, since a row whose best threshold
    sits on an end may want one outside the range.
    """
    block = _block(result, level)
    rt = block.recommended_threshold
    th = np.asarray(result.thresholds, dtype=np.float64)
    per = [c for c in block.per_class if c.best_threshold == c.best_threshold]
    best = np.array([c.best_threshold for c in per], dtype=np.float64)
    C = len(best)
    K = len(th)
    step = (th[-1] - th[0]) / max(K - 1, 1)
    noun, one = _noun(level), _noun(level, 1)
    if C <= MAX_DOTS:
        fig = _new_figure(9.0, max(3.6, 1.9 + 0.26 * C))
        ax = fig.add_subplot()
        _style(ax)
        order = sorted(range(C), key=lambda i: (best[i], per[i].label))
        y = np.arange(C)[::-1]
        worst = np.array([per[i].worst for i in order], dtype=bool)
        xs = best[order]
        ax.hlines(y, rt.value, xs, color="#9ca3af", lw=1, zorder=2, gid="best-threshold-stems")
        ax.scatter(xs[~worst], y[~worst], s=46, color=C_GOOD, zorder=3, gid="best-threshold-dots",
                   label=f"{noun}: own best threshold")
        if worst.any():
            ax.scatter(xs[worst], y[worst], s=46, color=C_WORST, zorder=3,
                       gid="best-threshold-dots-worst",
                       label=f"worst {100 * result.epsilon:g}% by mean utility")
        ax.set_yticks(y, [short_label(per[i].label) for i in order], fontsize=8)
        for t in ax.get_yticklabels():
            _user_text(t)
        ax.set_ylim(-0.7, C - 0.3)
        ax.grid(False, axis="y")
        ax.set_ylabel(one)
    else:
        fig = _new_figure(9.0, 4.6)
        ax = fig.add_subplot()
        _style(ax)
        # Bins centred on grid thresholds (every best threshold is one), at most 41 of them.
        group = int(np.ceil(K / 41))
        edges = np.concatenate([th[::group] - step / 2, [th[-1] + step / 2]])
        counts, _, _ = ax.hist(best, bins=edges, color=C_GOOD, alpha=0.85, edgecolor="white",
                               lw=0.5, zorder=3, gid="best-threshold-hist",
                               label=f"{noun} ({C:,}) by their own best threshold")
        nonzero = counts[counts > 0]
        if nonzero.size and nonzero.max() > 20 * np.median(nonzero):
            ax.set_yscale("log")  # one tall bar would hide the others
            ax.set_ylim(bottom=0.5)  # a bar of one stays visible
            ax.set_ylabel(f"{noun} (count, log scale)")
        else:
            ax.set_ylabel(f"{noun} (count)")
    ax.axvline(rt.value, color=C_THRESHOLD, lw=2.2, ls="-.", zorder=4, gid="recommended-threshold",
               label=f"recommended global threshold {rt.value:.4g}")
    for x in (th[0], th[-1]):
        ax.axvline(x, color="#9ca3af", lw=1, ls=":", zorder=1, gid="calibration-range-end")
    tol = step / 2
    below = float(np.mean(best < rt.value - tol)) if C else float("nan")
    above = float(np.mean(best > rt.value + tol)) if C else float("nan")
    at_lo = float(np.mean(best <= th[0] + tol)) if C else float("nan")
    at_hi = float(np.mean(best >= th[-1] - tol)) if C else float("nan")
    ax.set_xlim(*_padded(th[0] - step / 2, th[-1] + step / 2))
    ax.set_xlabel(f"threshold that maximises the {one}'s own utility "
                  f"({distance_unit(result.metric)})\ndotted: ends of the calibration range")
    _legend(ax)
    _titles(fig, ax, f"Each {one}'s own best threshold vs. the global one",
            f"{pct(below, '.0f')} of {noun} would want a lower threshold, "
            f"{pct(above, '.0f')} a higher one.\n{pct(at_lo, '.0f')} peak at the lower end of the "
            f"range (flat curves count there) and {pct(at_hi, '.0f')} at the upper end.")
    return fig


# -- 4. distances of positive and negative pairs --------------------------------
def distance_figure(result: "EvaluationResult") -> "Figure":
    """Densities of positive and negative pair distances, calibration range shaded."""
    hist = result.distance_histogram
    rt = result.recommended_threshold
    cr = result.calibration_range
    unit = distance_unit(result.metric)
    fig = _new_figure(9.0, 4.6)
    ax = fig.add_subplot()
    _style(ax)
    if hist is None or not hist.edges:
        ax.text(0.5, 0.5, "This result holds no distance histogram.", ha="center",
                transform=ax.transAxes, gid="no-histogram-note")
        lo, hi = cr.lower, cr.upper
    else:
        edges = np.asarray(hist.edges, dtype=np.float64)
        pos = np.asarray(hist.positive, dtype=np.float64)
        neg = np.asarray(hist.negative, dtype=np.float64)
        span = [cr.lower, cr.upper, rt.value]
        for counts, color, name, gid in (
                (pos, C_POS, "positive pairs (same label)", "positive-density"),
                (neg, C_NEG, "negative pairs (different labels)", "negative-density")):
            total = counts.sum()
            if total <= 0:
                continue
            cum = np.cumsum(counts) / total
            first = int(np.searchsorted(cum, 0.001))
            last = min(int(np.searchsorted(cum, 0.999)) + 1, len(edges) - 1)
            span += [edges[first], edges[last]]
            e, c = _rebin(edges, counts, last - first, total)
            dens = c / (total * np.diff(e))
            ax.stairs(dens, e, fill=True, color=color, alpha=0.35, zorder=2, gid=gid)
            ax.stairs(dens, e, color=color, lw=1.3, zorder=3, gid=gid + "-outline",
                      label=f"{name}: {int(total):,} in the histogram")
        lo, hi = min(span), max(span)
        pad = 0.04 * (hi - lo or 1.0)
        lo, hi = max(edges[0], lo - pad), min(edges[-1], hi + pad)
    ax.axvspan(cr.lower, cr.upper, color=C_RANGE, alpha=0.3, lw=0, zorder=1,
               gid="calibration-range",
               label=f"calibration range {cr.lower:.4g} to {cr.upper:.4g} "
                     f"(global FAR {pct(cr.far_lower)} to {pct(cr.far_upper)})")
    ax.axvline(rt.value, color=C_THRESHOLD, lw=2, ls="-.", zorder=4, gid="recommended-threshold",
               label=f"recommended threshold {rt.value:.4g}")
    ax.set_xlim(lo, hi)
    ax.set_ylim(bottom=0)
    ax.set_xlabel(f"distance between the two embeddings of a pair ({unit})")
    ax.set_ylabel("density (each curve has area 1)")
    _legend(ax)
    _titles(fig, ax, "Distances of positive and negative pairs",
            "Pairs left of the threshold are accepted.  Overlap of the two distributions "
            "is what no threshold can separate.")
    return fig


def _rebin(edges: np.ndarray, counts: np.ndarray, visible_bins: int,
           total: float) -> tuple[np.ndarray, np.ndarray]:
    """Merge neighbouring bins (by a power of two) until a bin holds ~100 pairs on average.

    Few pairs spread over the fine histogram's bins draw as noise; this keeps
    at least 16 bins across the visible part of the distribution.
    """
    target = float(np.clip(total / 100.0, 16, max(visible_bins, 1)))
    f = 1
    while visible_bins / (2 * f) >= target and 2 * f < len(counts):
        f *= 2
    if f == 1:
        return edges, counts
    starts = np.arange(0, len(counts), f)
    return np.append(edges[starts], edges[-1]), np.add.reduceat(counts, starts)


# -- 5. the classes behind OPIS ---------------------------------------------------
def contribution_figure(result: "EvaluationResult", *, level: str = "class",
                        top: int = TOP_CONTRIBUTIONS) -> "Figure":
    """The ``top`` rows with the largest share of OPIS, labelled.

    A row contributes by being far from the mean curve in either direction,
    so bars are red for rows below the average mean utility and blue above.
    """
    from matplotlib.patches import Patch

    block = _block(result, level)
    per = sorted(block.per_class, key=lambda c: (-_finite(c.opis_contribution), c.label))
    shown: list[ClassSummary] = per[:top]
    C = len(block.per_class)
    avg = float(np.mean([c.mean_utility for c in block.per_class])) if C else float("nan")
    total = block.opis if block.opis and block.opis > 0 else float("nan")
    share = np.array([_finite(c.opis_contribution) for c in shown]) / total
    n = len(shown)
    fig = _new_figure(9.0, max(3.4, 1.9 + 0.28 * n))
    ax = fig.add_subplot()
    _style(ax)
    ax.grid(False, axis="y")
    y = np.arange(n)[::-1]
    colors = [C_WORST if c.mean_utility < avg else C_GOOD for c in shown]
    ax.barh(y, share, color=colors, height=0.7, zorder=3, gid="contribution-bars")
    ax.set_yticks(y, [short_label(c.label) for c in shown], fontsize=8)
    for t in ax.get_yticklabels():
        _user_text(t)
    for yi, s, c in zip(y, share, shown):
        ax.text(s, yi, f"  {100 * s:.3g}%  (mean utility {c.mean_utility:.3f})", va="center",
                fontsize=7.5, color="#374151", zorder=4)
    ax.set_xlim(0, (float(np.nanmax(share)) if n else 1.0) * 1.45 or 1.0)
    ax.set_ylim(-0.6, n - 0.4)
    _percent_axis(ax.xaxis)
    one, noun = _noun(level, 1), _noun(level)
    ax.set_xlabel(f"share of OPIS (the {one}'s squared distance from the mean curve, "
                  "averaged over the range)")
    _legend(ax, [Patch(color=C_WORST, label=f"mean utility below the average {avg:.3f}"),
                 Patch(color=C_GOOD, label="mean utility above the average")])
    _titles(fig, ax, f"The {n} {_noun(level, n)} contributing most to OPIS"
            + (f" (of {C:,})" if C > n else ""),
            f"Together {pct(float(np.nansum(share)), '.1f')} of OPIS {block.opis:.4g}.  "
            f"Fixing these {noun} moves OPIS the most.")
    return fig


def _finite(v: float) -> float:
    return v if v == v else 0.0


# -- 6. the verification view: DET curve -------------------------------------------
#: rates drawn on the DET axes are clipped into [DET_LO, 1 - DET_LO]
DET_LO = 1e-7
DET_TICKS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.05, 0.2, 0.5, 0.8, 0.95, 0.99)
#: colours of the group curves: reds for the worst groups, blues for the best
C_DET_WORST = ("#991b1b", "#dc2626", "#f87171", "#fca5a5")
C_DET_BEST = ("#93c5fd", "#60a5fa", "#2563eb", "#1e3a8a")


def _probit(v) -> np.ndarray:
    """Normal deviates of rates (clipped away from 0 and 1)."""
    from statistics import NormalDist

    z = NormalDist().inv_cdf
    return np.array([z(x) for x in np.clip(np.atleast_1d(np.asarray(v, np.float64)), DET_LO,
                                           1 - DET_LO)])


def draw_det(ax, result: "EvaluationResult") -> tuple[str, str]:
    """Draw the DET curve (:func:`det_figure`) into ``ax``; returns the figure's
    ``(title, subtitle)``."""
    v = result.verification
    rt = result.recommended_threshold
    cr = result.calibration_range
    _style(ax)
    if v is None or not v.det:
        ax.text(0.5, 0.5, "This result holds no verification view (evaluate with "
                "--verification).", ha="center", transform=ax.transAxes, gid="no-det-note")
        return ("DET curve", "")
    far, frr = (np.array([p[i] for p in v.det]) for i in (0, 1))
    # the axes show where the global curve is inside the square [0, 95%] of both rates
    seen = [far[frr < 0.95], frr[far < 0.95], [cr.far_lower, cr.far_upper, rt.far, rt.frr, v.eer]]
    worst = len(v.group_det) - min(len(v.group_det), 4) if len(v.group_det) > 4 else \
        (len(v.group_det) + 1) // 2
    for i, (label, pts) in enumerate(v.group_det):
        gf, gr = (np.array([p[k] for p in pts]) for k in (0, 1))
        color = C_DET_WORST[i % 4] if i < worst else C_DET_BEST[(i - worst) % 4]
        ax.plot(_probit(gf), _probit(gr), color=color, lw=1.1, alpha=0.9, zorder=3,
                gid=f"det-group-{i}", label=f"group {short_label(label)}")
    ax.plot(_probit(far), _probit(frr), color=C_MEAN, lw=2.4, zorder=4, gid="det-global",
            label=f"all pairs (EER {pct(v.eer)})")
    vals = np.concatenate([np.asarray(x, np.float64) for x in seen])
    inner = vals[(vals > 0) & (vals < 1)]
    lo = max(1e-6, float(inner.min()) * 0.7) if len(inner) else 1e-4
    lims = _probit([lo, 0.95])
    zlo, zhi = float(lims[0]), float(lims[1])
    ax.axvspan(*_probit([cr.far_lower, cr.far_upper]), color=C_RANGE, alpha=0.3, lw=0,
               zorder=1, gid="calibration-range",
               label=f"calibration range: global FAR {pct(cr.far_lower)} to {pct(cr.far_upper)}")
    ax.plot([zlo, zhi], [zlo, zhi], color="#9ca3af", lw=0.8, ls=":", zorder=2, gid="eer-line")
    (ez,) = _probit(v.eer)
    ax.plot([ez], [ez], "o", color=C_WORST, ms=7, zorder=5, gid="eer-point",
            label=f"EER {pct(v.eer)}")
    (rx,), (ry,) = _probit(rt.far), _probit(rt.frr)
    ax.plot([rx], [ry], "*", color=C_THRESHOLD, ms=14, zorder=6, gid="recommended-threshold",
            label=f"recommended threshold {rt.value:.4g} (FAR {pct(rt.far)}, "
                  f"FRR {pct(rt.frr)})")
    ticks = []
    for t in DET_TICKS:  # at least 0.75 normal deviates apart, so labels do not collide
        if lo * 0.999 <= t <= 0.95 and (not ticks or _probit(t)[0] - _probit(ticks[-1])[0] > 0.75):
            ticks.append(t)
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_ticks(_probit(ticks), [f"{100 * t:g}%" for t in ticks])
    ax.set_xlim(zlo, zhi)
    ax.set_ylim(zlo, zhi)
    ax.set_xlabel("false accept rate (FAR, FMR), normal-deviate scale")
    ax.set_ylabel("false reject rate (FRR, FNMR), normal-deviate scale")
    _legend(ax)
    for t in ax.get_legend().get_texts():
        _user_text(t)
    shown = f"; {len(v.group_det)} groups: the worst (red) and best (blue) by EER" \
        if v.group_det else ""
    return ("DET curve: false rejects against false accepts",
            f"Every threshold over all pairs of the evaluated classes{shown}.\n"
            "Lower left is better.")


def det_figure(result: "EvaluationResult") -> "Figure":
    """The DET curve (FRR against FAR on normal-deviate axes) over all pairs,
    with the worst and best groups, the calibration range (its FAR band), the
    recommended threshold's operating point and the EER on the diagonal."""
    fig = _new_figure(7.6, 6.4)
    ax = fig.add_subplot()
    title, subtitle = draw_det(ax, result)
    _titles(fig, ax, title, subtitle)
    return fig


# -- fairness across the range (SPEC 13) ---------------------------------------------
def fairness_figure(result: "EvaluationResult") -> "Figure":
    """FDR and GARBE (SPEC 13) at every grid threshold, for the classes and (dashed)
    the groups, read from the blocks' ``fairness`` curves; the x axis spans the
    calibration range and the recommended threshold is marked."""
    fig = _new_figure(9.0, 4.8)
    ax = fig.add_subplot()
    _style(ax)
    th = np.asarray(result.thresholds, np.float64)
    rt = result.recommended_threshold
    blocks = [(lvl, _block(result, lvl)) for lvl in ("class", "group")
              if lvl == "class" or result.groups is not None]
    drawn = [(lvl, b.fairness) for lvl, b in blocks
             if b.fairness is not None and len(b.fairness.fdr) == len(th)]
    if not drawn:
        ax.text(0.5, 0.5, "This result holds no fairness curves (written by an older opis; "
                "evaluate again).", ha="center", transform=ax.transAxes, gid="no-fairness-note")
        _titles(fig, ax, "Fairness of the threshold across the calibration range")
        return fig
    alpha = drawn[0][1].alpha
    for lvl, fc in drawn:
        style = "-" if lvl == "class" else "--"
        what = _noun(lvl)
        ax.plot(th, fc.fdr, style, color=C_GOOD, lw=2.0, gid=f"fdr-{lvl}",
                label=f"FDR over {what} (higher is fairer; range mean {fc.fdr_mean:.4f})")
        if fc.garbe is not None:
            ax.plot(th, fc.garbe, style, color=C_WORST, lw=2.0, gid=f"garbe-{lvl}",
                    label=f"GARBE over {what} (lower is fairer; range mean "
                          f"{fc.garbe_mean:.4f})")
    ax.axvline(rt.value, color=C_THRESHOLD, lw=1.6, gid="recommended-threshold",
               label=f"recommended threshold {rt.value:.4g}")
    if len(th):
        ax.set_xlim(*_padded(float(th[0]), float(th[-1])))
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(f"threshold ({distance_unit(result.metric)}), across the calibration range")
    ax.set_ylabel("FDR / GARBE")
    _legend(ax)
    f = rt.fairness
    at = (f"  At the threshold: FDR {f.fdr:.4f}, GARBE "
          f"{'n/a' if f.garbe is None else format(f.garbe, '.4f')}." if f is not None else "")
    _titles(fig, ax, "Fairness of the threshold across the calibration range",
            f"Alpha {alpha:g} (the weight of FAR against FRR).{at}")
    return fig


# -- all of them ------------------------------------------------------------------
def all_figures(result: "EvaluationResult", class_curves: "Curves | None" = None,
                group_curves: "Curves | None" = None) -> dict[str, "Figure"]:
    """Every figure of the report, by file stem, in display order."""
    figs = {
        "utility": utility_figure(result, class_curves),
        "far_frr": far_frr_figure(result),
        "best_thresholds": best_threshold_figure(result),
        "distances": distance_figure(result),
        "contributions": contribution_figure(result),
        "fairness": fairness_figure(result),
    }
    if result.verification is not None and result.verification.det:
        figs["det"] = det_figure(result)
    if result.groups is not None:
        figs["group_utility"] = utility_figure(result, group_curves, level="group")
    return figs


def to_png(fig: "Figure") -> bytes:
    """The figure as PNG bytes (no software tag, so the bytes do not depend on versions)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()
