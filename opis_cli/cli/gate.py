"""``opis gate``: check a saved result against release rules."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import options as opt
from . import options as o
from .options import ADVANCED_OPTION, ENGINE, GATE, INPUT, OUTPUTS, RANGE, TRACKERS  # noqa: F401
from .root import (app, check_inputs, check_outputs, examples, exit_with, stdout_taken,
                   write_gate_outputs)


@app.command(epilog=examples(
    "opis gate weak.json --max opis=0.02 --min recall_at_1=0.9",
    "opis gate new.json --baseline weak.json --max-increase opis=ci"))
def gate(
    result: Annotated[Path, typer.Argument(help="Result JSON written by opis evaluate --json.",
                                           show_default=False)],
    baseline: o.Baseline = None,
    max_rules: o.MaxRules = None,
    min_rules: o.MinRules = None,
    max_increase: o.MaxIncreaseRules = None,
    max_decrease: o.MaxDecreaseRules = None,
    config: o.Config = None,
    no_config: Annotated[bool, typer.Option(
        "--no-config", help="Do not look for opis.toml / pyproject.toml (tool.opis.gate).",
        rich_help_panel=GATE)
    ] = False,
    curves: Annotated[Optional[Path], typer.Option(
        help="Per-class curves of RESULT (opis evaluate --curves), for 'ci' rules when "
             "RESULT holds no bootstrap.", rich_help_panel=INPUT)] = None,
    baseline_curves: Annotated[Optional[Path], typer.Option(
        help="Per-class curves of the baseline, likewise.", rich_help_panel=INPUT)] = None,
    bootstrap: o.Bootstrap = None,
    seed: o.Seed = opt.SEED,
    confidence: o.Confidence = None,
    json_out: Annotated[Optional[str], typer.Option(
        "--json", metavar="PATH", help="Write the gate outcome as JSON here ('-' for stdout).",
        rich_help_panel=OUTPUTS)] = None,
    junit: o.Junit = None,
    markdown: o.Markdown = None,
    quiet: o.Quiet = False,
    debug: o.Debug = False,
) -> None:
    """Check a result against release rules: exit 0 when all hold, 1 when one fails.

    Rules come from options and from the config file (a tool.opis.gate table
    in pyproject.toml, or opis.toml) found by walking up from the current folder.
    """
    opt.check("confidence", confidence)
    check_outputs((json_out, "--json"), (junit, "--junit"), (markdown, "--markdown"))
    check_inputs(result)
    from ..gate.sides import run_gate  # numpy: only once the file is known to exist
    from ..render.terminal import print_gate_outcome, results_on_stderr

    outcome, cand = run_gate(result, o.rule_options(max_rules, min_rules, max_increase,
                                                    max_decrease),
                             baseline=baseline, config=config, discover=not no_config,
                             curves=curves, baseline_curves=baseline_curves,
                             resamples=bootstrap, seed=seed, confidence=confidence)
    from ..gate.compare import shown_metrics

    write_gate_outputs(outcome, json_out=json_out, junit=junit, markdown=markdown,
                       headline=shown_metrics(cand.result), verdict=cand.result.verdict,
                       quiet=quiet)
    if not quiet:
        with results_on_stderr(stdout_taken(json_out, markdown)):
            print_gate_outcome(outcome)
    raise exit_with(outcome)
