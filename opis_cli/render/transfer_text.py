"""``opis calibrate`` in the terminal: one table per fold and a summary line.

Read in ten seconds: the target; per fold the calibration threshold, what it
gives on the unseen classes (FAR, TPR, per-class FAR spread, share above
twice the target) and the threshold the unseen side alone would have needed
with its TPR; then "target FAR 1.00% -> achieved 0.71% .. 2.30% on unseen
classes, mean 1.42%". Labels and paths are escaped as everywhere
(``render/escape.py``).
"""

from __future__ import annotations

from rich import box
from rich.table import Table
from rich.text import Text

from ..transfer import SPLIT_FOLDS, TransferResult
from .escape import visible
from .format import num, pct
from .terminal import console


def headline(res: TransferResult) -> str:
    """The summary sentence (also the report's lead)."""
    s = res.summary()
    unseen = {"group": "unseen groups", "row": "held-out rows"}.get(res.split.get("by"),
                                                                 "unseen classes")
    far = s["far"]
    if res.target.name == "far":
        lead = f"target FAR {pct(res.target.far)}"
    else:
        lead = f"threshold by {res.target.name}"
    if len(res.folds) == 1:
        achieved = f"achieved {pct(far['mean'])} on {unseen}"
    else:
        achieved = (f"achieved {pct(far['min'])} .. {pct(far['max'])} on {unseen}, "
                    f"mean {pct(far['mean'])}")
    tpr = s["tpr"]
    lost = s["tpr_lost"]["mean"]
    return (f"{lead} -> {achieved}; TPR {pct(tpr['mean'])} (the test side's own threshold "
            f"would give {pct(s['oracle_tpr']['mean'])}, {pct(lost, '+.2f')})")


def print_transfer(res: TransferResult, source: str = "") -> None:
    """The verdict (does the threshold transfer?), the folds as a table and the summary line."""
    from .terminal import verdict_renderables

    for r in verdict_renderables(res.verdict):
        console.print(r, soft_wrap=True)
    split = res.split
    if split["kind"] == SPLIT_FOLDS:
        how = (f"{split['folds']} {split['by']}-disjoint folds (seed {split['seed']})"
               if split["by"] != "row" else
               f"{split['folds']} folds of every class's rows (seed {split['seed']})")
    else:
        how = "calibration file -> test file"
    console.print(Text.assemble(
        ("opis calibrate", "bold"), f" {visible(source)}: {res.n_samples} rows x {res.dim} dims, "
        f"metric {res.metric}; {how}; target {res.target}"))
    unit = "groups" if split.get("by") == "group" else "classes"
    noun = "group" if unit == "groups" else "class"
    t = Table(title="Threshold chosen on the calibration side, applied to the test side",
              title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for col in ("fold", unit, "threshold", "FAR", "TPR", "FAR p95", ">2x", "own thr",
                "own TPR"):
        t.add_column(col, justify="right", no_wrap=True)
    for f in res.folds:
        c, b = f.calibration, f.test
        g = b.groups if unit == "groups" else None  # a group split: over the unseen groups
        n, spread, above = ((len(g.per_group), g.far_spread, g.fraction_far_above_2x) if g
                            else (b.classes, b.far_spread, b.fraction_far_above_2x))
        t.add_row(str(f.fold), str(n), num(c.threshold, ".5f"), pct(b.far), pct(b.tpr),
                  pct(spread.p95), pct(above, ".0f"), num(b.oracle_threshold, ".5f"),
                  pct(b.oracle_tpr))
    console.print(t)
    console.print(f"threshold: chosen on the calibration side ({res.target}); FAR, TPR: on the "
                  f"test side's {unit} at it; FAR p95: 95th percentile of their per-{noun} FAR; "
                  ">2x: their share above twice the target; own thr, own TPR: the threshold the "
                  "test side alone needs for the target, and its TPR.", style="dim",
                  highlight=False)
    console.print(Text.assemble(("Summary", "bold"), ": ", headline(res)))
    methods = res.summary().get("methods")
    if methods:
        m = Table(title="Calibrations fitted on the calibration side, on the test side (mean "
                        "over folds)", title_justify="left", box=box.SIMPLE_HEAD,
                  pad_edge=False, collapse_padding=True)
        for col in ("method", "OPIS", f"{100 * res.options.get('epsilon', 0.1):g}%-OPIS",
                    "FAR", "FAR min..max", "TPR", ">2x", "uncal."):
            m.add_column(col, justify="right" if col != "method" else "left", no_wrap=True)
        for i, (name, v) in enumerate(methods.items()):
            unc = sum(f.methods[i].uncalibrated_rows for f in res.folds)
            m.add_row(visible(name), num(v["opis"]["mean"], ".5f"),
                      num(v["epsilon_opis"]["mean"], ".5f"), pct(v["far"]["mean"]),
                      f"{pct(v['far']['min'])}..{pct(v['far']['max'])}", pct(v["tpr"]["mean"]),
                      pct(v["fraction_far_above_2x"]["mean"], ".0f"), str(unc))
        console.print(m)
        console.print("OPIS on each test side's own FAR range; FAR, TPR, >2x at the global "
                      "threshold fitted with the method; uncal.: test rows the calibration "
                      "could not place (offset 0).", style="dim", highlight=False)
