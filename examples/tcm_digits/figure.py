"""The digits picture: each class's density on the unit circle, without and with TCM.

A model with a 2-D, L2-normalised embedding puts every image at an angle on
the unit circle. For each class we draw a kernel density of those angles
(wrapped Gaussian kernel) as a coloured band standing on the circle: a tall,
narrow band is a compact class; bands that overlap are classes one threshold
cannot tell apart. One panel per model, side by side, one row per image set.

matplotlib only (imported lazily); no torch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

_GRID = 720  # angles at which each density is drawn
_RING = 1.0  # radius of the unit circle in the drawing
_HEIGHT = 0.9  # radial height of the tallest density of a row of panels


@dataclass(frozen=True)
class Panel:
    """One model's embeddings: ``angles[label]`` are that class's angles in radians."""

    title: str
    angles: Mapping[str, np.ndarray]


def angles_of(embeddings: np.ndarray) -> np.ndarray:
    """Angle in radians, in [-pi, pi], of each row of an (N, 2) embedding."""
    e = np.asarray(embeddings, dtype=np.float64)
    if e.ndim != 2 or e.shape[1] != 2:
        raise ValueError(f"expected (N, 2) embeddings, got shape {e.shape}")
    return np.arctan2(e[:, 1], e[:, 0])


def circular_kde(angles: np.ndarray, grid: np.ndarray, bandwidth: float) -> np.ndarray:
    """Wrapped-Gaussian kernel density of ``angles`` at ``grid`` (integrates to 1 over 2 pi)."""
    a = np.asarray(angles, dtype=np.float64)
    diff = np.angle(np.exp(1j * (grid[:, None] - a[None, :])))  # wrapped to [-pi, pi]
    k = np.exp(-0.5 * (diff / bandwidth) ** 2) / (bandwidth * np.sqrt(2 * np.pi))
    return k.mean(axis=1)


def density_figure(rows: Sequence[Sequence[Panel]], *, row_titles: Sequence[str] = (),
                   bandwidth: float = 0.05, suptitle: str = ""):
    """A grid of polar panels (one row per list in ``rows``), each class's angle density as a band.

    The panels of a row share the radial scale, so heights compare along a
    row: the higher and narrower a band, the more compact the class. Each row
    is scaled to its own tallest density. Each row gets
    its own legend (its classes), labelled with ``row_titles[i]`` when given.
    Returns the matplotlib Figure.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rows = [list(r) for r in rows]
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    grid = np.linspace(-np.pi, np.pi, _GRID)
    dens = [[{label: circular_kde(a, grid, bandwidth) for label, a in p.angles.items()}
             for p in r] for r in rows]
    peaks = [max(float(d.max()) for ds in r for d in ds.values()) for r in dens]
    fig, axes = plt.subplots(n_rows, n_cols, subplot_kw={"projection": "polar"},
                             figsize=(4.6 * n_cols, 4.9 * n_rows + (0.5 if suptitle else 0)),
                             squeeze=False)
    cmap = plt.get_cmap("tab10")
    for i, (r, rd) in enumerate(zip(rows, dens, strict=True)):
        labels = sorted({label for p in r for label in p.angles})
        colours = {label: cmap(k % 10) for k, label in enumerate(labels)}
        for j in range(n_cols):
            ax = axes[i, j]
            if j >= len(r):
                ax.set_visible(False)
                continue
            ax.plot(grid, np.full_like(grid, _RING), color="0.35", lw=0.8)
            for label in labels:
                if label not in rd[j]:
                    continue
                rr = _RING + _HEIGHT * rd[j][label] / peaks[i]
                ax.fill_between(grid, _RING, rr, color=colours[label], alpha=0.45, lw=0)
                ax.plot(grid, rr, color=colours[label], lw=1.2, label=label)
            ax.set_ylim(0, _RING + _HEIGHT * 1.05)
            ax.set_yticks([])
            ax.set_xticks(np.radians(np.arange(0, 360, 45)))
            ax.tick_params(labelsize=8, pad=0)
            ax.grid(alpha=0.3)
            ax.set_title(r[j].title, pad=16, fontsize=10)
        handles, names = axes[i, 0].get_legend_handles_labels()
        title = row_titles[i] if i < len(row_titles) else None
        axes[i, 0].legend(handles, names, title=title, loc="center left", frameon=False,
                          bbox_to_anchor=(-0.62, 0.5), fontsize=9, title_fontsize=9)
    if suptitle:
        fig.suptitle(suptitle, fontsize=12)
    fig.tight_layout()
    return fig


def save_density_figure(path: str | os.PathLike, rows: Sequence[Sequence[Panel]],
                        **kwargs) -> None:
    """Draw :func:`density_figure` and save it as PNG (atomically)."""
    import matplotlib.pyplot as plt

    from opis_cli.io.output import atomic_path

    fig = density_figure(rows, **kwargs)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
    finally:
        plt.close(fig)
