"""The composite GitHub Action (action.yml), its script steps run end to end.

action.yml is parsed with PyYAML (test extra). The ``run:`` steps are executed
with bash the way the runner would: ``${{ inputs.* }}``, ``${{ github.* }}`` and
``${{ steps.*.outputs.* }}`` expressions are substituted, ``env:`` and
``working-directory:`` applied, ``GITHUB_OUTPUT`` and ``GITHUB_STEP_SUMMARY``
point at files. The ``uses:`` steps (setup-python, upload-artifact) belong to
GitHub; for upload-artifact the test checks that the path it would upload
exists and holds the report. The install step is not run (it would reinstall
the package under test into the test environment); the test checks what it
installs.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import yaml

from gating_samples import REPO, WEAK

ACTION = yaml.safe_load((REPO / "action.yml").read_text(encoding="utf-8"))
STEPS = ACTION["runs"]["steps"]
_EXPR = re.compile(r"\$\{\{\s*([^}]*?)\s*\}\}")


def step(step_id: str) -> dict:
    return next(s for s in STEPS if s.get("id") == step_id)


def uses(prefix: str) -> dict:
    return next(s for s in STEPS if str(s.get("uses", "")).startswith(prefix))


def substitute(text: str, ctx: dict) -> str:
    def value(m: re.Match) -> str:
        expr = m.group(1)
        if expr not in ctx:
            raise AssertionError(f"action.yml uses an expression the test does not know: {expr}")
        return ctx[expr]

    return _EXPR.sub(value, str(text))


def read_outputs(path: Path) -> dict:
    out = {}
    for line in path.read_text().splitlines():
        k, _, v = line.partition("=")
        out[k] = v
    return out


class Runner:
    """Runs the action's script steps in ``workspace`` with the given inputs."""

    def __init__(self, workspace: Path, **inputs: str):
        self.ws = workspace
        defaults = {k: str(v.get("default", "")) for k, v in ACTION["inputs"].items()}
        unknown = set(inputs) - set(defaults)
        assert not unknown, f"no such action inputs: {unknown}"
        self.inputs = {**defaults, **inputs}
        self.summary = workspace / "step_summary.md"
        self.summary.write_text("earlier step\n")  # must be appended to, not replaced
        self.ctx = {f"inputs.{k}": v for k, v in self.inputs.items()}
        self.ctx["github.action_path"] = str(REPO)

    def run_step(self, s: dict) -> subprocess.CompletedProcess:
        out_file = self.ws / f"github_output_{s['id']}"
        out_file.write_text("")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPIS_", "GITHUB_"))}
        env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
        env.update({k: substitute(v, self.ctx) for k, v in (s.get("env") or {}).items()})
        env.update(GITHUB_OUTPUT=str(out_file), GITHUB_STEP_SUMMARY=str(self.summary),
                   GITHUB_WORKSPACE=str(self.ws), COLUMNS="120")
        cwd = self.ws / substitute(s.get("working-directory", "."), self.ctx)
        assert s["shell"] == "bash"
        proc = subprocess.run(["bash", "-e", "-c", substitute(s["run"], self.ctx)], cwd=cwd,
                              env=env, capture_output=True, text=True, timeout=300)
        for k, v in read_outputs(out_file).items():
            self.ctx[f"steps.{s['id']}.outputs.{k}"] = v
        return proc

    def gate(self) -> tuple[subprocess.CompletedProcess, dict]:
        proc = self.run_step(step("gate"))
        return proc, {k.split(".")[-1]: v for k, v in self.ctx.items()
                      if k.startswith("steps.gate.outputs.")}

    def upload_path(self) -> Path:
        up = uses("actions/upload-artifact")
        return Path(substitute(up["with"]["path"], self.ctx))


# ------------------------------------------------------------------ the file itself


def test_action_shape():
    assert ACTION["runs"]["using"] == "composite"
    names = [s.get("uses", s.get("id")) for s in STEPS]
    assert names[0].startswith("actions/setup-python@")
    assert uses("actions/setup-python")["with"]["python-version"] == "${{ inputs.python-version }}"
    assert ACTION["inputs"]["candidate"]["required"] is True
    assert ACTION["inputs"]["python-version"]["default"] == "3.11"
    up = uses("actions/upload-artifact")
    assert "always()" in up["if"]          # the report is uploaded when the gate fails too
    assert up["with"]["name"] == "${{ inputs.artifact-name }}"
    for out in ("passed", "exit-code", "json", "junit", "report-dir"):
        assert ACTION["outputs"][out]["value"] == "${{ steps.gate.outputs.%s }}" % out


def test_inputs_reach_scripts_only_through_env():
    """No ${{ }} inside a run: script, so an input cannot inject shell code."""
    for s in STEPS:
        if "run" in s:
            assert "${{" not in s["run"], s.get("name")


def test_install_step_installs_this_package_by_default():
    s = step("install")
    assert s["env"]["OPIS_ACTION_PATH"] == "${{ github.action_path }}"
    assert "pip install" in s["run"] and "${OPIS_PACKAGE:-$OPIS_ACTION_PATH}" in s["run"]
    assert 'name = "opis-cli"' in (REPO / "pyproject.toml").read_text()


# ------------------------------------------------------------------ end to end


def test_worse_candidate_fails_with_report_summary_and_junit(samples, tmp_path):
    r = Runner(tmp_path, candidate=str(WEAK), baseline=str(samples.strong_json),
               rules="max-increase opis=10%\n# a comment\nmax-increase opis=ci\n",
               bootstrap="0")
    proc, outputs = r.gate()
    assert proc.returncode == 1, proc.stderr
    assert outputs["exit-code"] == "1" and outputs["passed"] == "false"
    summary = r.summary.read_text()
    # the verdict of the comparison first, then the gate
    assert summary.startswith("earlier step\n### Which model is more consistent?\n\n**Baseline**")
    assert "\n### opis gate: FAILED" in summary
    assert "`max-increase opis=10%`" in summary and "### opis compare" in summary
    junit = ET.parse(outputs["junit"]).getroot()
    assert junit.get("tests") == "2" and junit.get("failures") == "2"
    uploaded = r.upload_path()
    assert uploaded == Path(outputs["output-dir"]) and uploaded.is_dir()
    assert (uploaded / "report" / "compare.html").is_file()
    assert Path(outputs["report-dir"]) == uploaded / "report"


def test_better_candidate_passes(samples, tmp_path):
    r = Runner(tmp_path, candidate=str(samples.strong_json), baseline=str(samples.weak_json),
               rules="max-increase opis=10%; max-increase opis=ci; min recall_at_1=0.95",
               **{"output-dir": "out"})
    proc, outputs = r.gate()
    assert proc.returncode == 0, proc.stderr
    assert outputs["passed"] == "true" and outputs["output-dir"] == str(tmp_path / "out")
    assert "### opis gate: passed" in r.summary.read_text()
    assert ET.parse(outputs["junit"]).getroot().get("failures") == "0"


def test_rules_from_the_config_file_and_no_baseline(samples, tmp_path):
    (tmp_path / ".git").mkdir()
    (tmp_path / "opis.toml").write_text("[gate]\nmax = { opis = 0.01 }\n")
    r = Runner(tmp_path, candidate=str(samples.weak_json))
    proc, outputs = r.gate()
    assert proc.returncode == 1, proc.stderr
    assert "`max opis=0.01`" in r.summary.read_text()
    assert outputs["report-dir"] == ""       # a result JSON without baseline: no report
    assert outputs["json"] == str(samples.weak_json)


def test_embeddings_without_baseline_evaluate_report_and_gate(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 15)
    x = rng.normal(size=(4, 5))[y] + 0.6 * rng.normal(size=(60, 5))
    np.save(tmp_path / "emb.npy", x.astype(np.float32))
    (tmp_path / "labels.txt").write_text("".join(f"c{v}\n" for v in y))
    r = Runner(tmp_path, candidate="emb.npy", labels="labels.txt", rules="max opis=1",
               bootstrap="50", args="--num-thresholds 21")
    proc, outputs = r.gate()
    assert proc.returncode == 0, proc.stderr
    result = Path(outputs["json"])
    assert result == tmp_path / "opis-output" / "opis-result.json"
    doc = json.loads(result.read_text())
    assert len(doc["thresholds"]) == 21 and doc["bootstrap"]["resamples"] == 50
    assert (Path(outputs["report-dir"]) / "report.html").is_file()
    assert "### opis gate: passed" in r.summary.read_text()


def test_usage_error_exits_2_and_says_so_in_the_summary(samples, tmp_path):
    r = Runner(tmp_path, candidate=str(samples.weak_json), rules="max opsi=1")
    proc, outputs = r.gate()
    assert proc.returncode == 2
    assert "unknown metric 'opsi'" in proc.stderr
    assert outputs["exit-code"] == "2"
    assert "### opis gate: error" in r.summary.read_text()
    r = Runner(tmp_path, candidate="")
    proc, outputs = r.gate()
    assert proc.returncode == 2 and outputs["exit-code"] == "2"
