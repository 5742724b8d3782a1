"""The script step of the composite GitHub Action (``action.yml``).

Run as ``python -m opis_cli.ci_action``. Its inputs arrive as environment
variables (the action passes every input through ``env:``, never by pasting
it into the script, so no input can inject shell code):

    OPIS_CANDIDATE    embeddings file or result JSON of the candidate (required)
    OPIS_BASELINE     optional baseline (result JSON or embeddings file)
    OPIS_LABELS       labels file for .npy/.npz embeddings
    OPIS_RULES        gate rules, one per line: "max opis=0.02", "min recall_at_1=0.9",
                      "max-increase opis=10%", "max-increase opis=ci" ("--max ..." also works)
    OPIS_CONFIG       config file with the rules ([tool.opis.gate] / opis.toml);
                      empty: the one found from the working directory
    OPIS_BOOTSTRAP    bootstrap resamples over classes (0: none; default 1000)
    OPIS_ARGS         extra options for opis evaluate / opis compare (shell words)
    OPIS_OUTPUT_DIR   where results, JUnit XML, summary and report go (default opis-output)

With a baseline it runs ``opis compare BASELINE CANDIDATE`` with the rules
(before/after report); without one, ``opis evaluate`` (for an embeddings
candidate, with ``--report``) and then ``opis gate``. It appends the Markdown
summary to ``$GITHUB_STEP_SUMMARY``, writes the step outputs (``exit-code``,
``passed``, ``output-dir``, ``report-dir``, ``json``, ``junit``) to
``$GITHUB_OUTPUT``, and exits with the gate's exit code (0 pass, 1 fail,
2 error).
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Mapping

from .errors import ExitCode

DEFAULT_OUTPUT_DIR = "opis-output"


def rule_args(text: str) -> list[str]:
    """Command-line options from rule lines (``max opis=0.02`` -> ``--max opis=0.02``).

    Lines may also be separated by ``;``; blank lines and ``#`` comments are
    skipped. A line is passed on as ``--KIND VALUE`` without further checks,
    so opis itself reports a bad one (exit 2).
    """
    args: list[str] = []
    for raw in text.replace(";", "\n").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        kind, _, value = line.partition(" ")
        args += [f"--{kind.lstrip('-')}", value.strip()]
    return args


def _is_json(path: str) -> bool:
    return path.lower().endswith(".json")


def plan(env: Mapping[str, str]) -> tuple[list[list[str]], dict[str, str]]:
    """The opis command lines to run, and the step outputs that describe their files."""
    cand = env.get("OPIS_CANDIDATE", "").strip()
    if not cand:
        raise ValueError("the action input 'candidate' is empty; give an embeddings file or "
                         "a result JSON")
    base = env.get("OPIS_BASELINE", "").strip()
    labels = env.get("OPIS_LABELS", "").strip()
    config = env.get("OPIS_CONFIG", "").strip()
    boot = env.get("OPIS_BOOTSTRAP", "1000").strip() or "0"
    extra = shlex.split(env.get("OPIS_ARGS", ""))
    out = Path(env.get("OPIS_OUTPUT_DIR", "").strip() or DEFAULT_OUTPUT_DIR).resolve()
    report = out / "report"
    junit = out / "opis-junit.xml"
    summary = out / "opis-summary.md"
    rules = rule_args(env.get("OPIS_RULES", ""))
    gate_src = (["--config", config] if config else []) + rules
    label_opt = ["--labels", labels] if labels else []
    boot_opt = ["--bootstrap", boot] if boot not in ("", "0") else []
    outputs = {"output-dir": str(out), "junit": str(junit), "summary": str(summary),
               "report-dir": ""}
    commands: list[list[str]]
    if base:
        result = out / "opis-compare.json"
        commands = [["compare", base, cand, *label_opt, *extra, *boot_opt,
                     *(gate_src or ["--gate"]), "--report", str(report), "--json", str(result),
                     "--junit", str(junit), "--markdown", str(summary)]]
        outputs["report-dir"] = str(report)
    else:
        result = Path(cand)
        commands = []
        if not _is_json(cand):
            result = out / "opis-result.json"
            commands.append(["evaluate", cand, *label_opt, *extra, *boot_opt, "--json",
                             str(result), "--report", str(report), "-q"])
            outputs["report-dir"] = str(report)
        commands.append(["gate", str(result), *gate_src,
                         "--json", str(out / "opis-gate.json"), "--junit", str(junit),
                         "--markdown", str(summary)])
    outputs["json"] = str(result)
    return commands, outputs


def _append(path: str | None, text: str) -> None:
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(text)


def main(env: Mapping[str, str] | None = None) -> int:
    """Run the plan; exit code of the last opis command (or the first that fails with 2)."""
    from .cli import main as opis
    from .render.escape import one_line

    env = os.environ if env is None else env
    try:
        commands, outputs = plan(env)
    except ValueError as e:
        print(f"Error: {one_line(e)}", file=sys.stderr)
        _append(env.get("GITHUB_OUTPUT"), f"exit-code={int(ExitCode.USAGE)}\npassed=false\n")
        return int(ExitCode.USAGE)
    Path(outputs["output-dir"]).mkdir(parents=True, exist_ok=True)
    summary = Path(outputs["summary"])
    if summary.exists():
        summary.unlink()
    code = int(ExitCode.OK)
    for argv in commands:
        print("+ opis " + one_line(shlex.join(argv)), file=sys.stderr, flush=True)
        code = opis(argv)
        if code not in (ExitCode.OK, ExitCode.GATE_FAILED):
            break
    step_summary = env.get("GITHUB_STEP_SUMMARY")
    if summary.exists():
        _append(step_summary, summary.read_text(encoding="utf-8") + "\n")
    else:
        _append(step_summary, f"### opis gate: error\n\nopis stopped with exit code {code} "
                              "(a usage or input error); see the step's log.\n\n")
    outputs.update({"exit-code": str(code), "passed": "true" if code == ExitCode.OK else "false"})
    if outputs["report-dir"] and not Path(outputs["report-dir"]).is_dir():
        outputs["report-dir"] = ""
    _append(env.get("GITHUB_OUTPUT"), "".join(f"{k}={v}\n" for k, v in sorted(outputs.items())))
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
