"""Gate rules, config files, outcome renderings and ``opis gate`` / ``opis evaluate`` gating.

Rule verdicts are checked on hand-made headline values (limits worked out
here); CLI runs use the two sample models evaluated once per session
(``gating_samples``), whose OPIS differ by an order of magnitude (weak
0.025, strong 0.0022, see sample_data/README.md).
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from gating_samples import STRONG, WEAK, run
from opis_cli.metrics.bootstrap import Bootstrap, labels_digest
from opis_cli.errors import ConfigError, InputError
from opis_cli.gate.rules import (HEADLINE_METRICS, Rule, Side, evaluate_rules, find_config,
                                 load_config, parse_rule)
from opis_cli.render.junit import junit_xml
from opis_cli.render.markdown import gate_markdown as markdown
from opis_cli.io import read_result


def side(name="cand", bootstrap=None, **values) -> Side:
    h = {m: 0.5 for m in HEADLINE_METRICS}
    h.update(values)
    return Side(name, h, bootstrap)


def verdict(kind, text, cand, base=None) -> bool:
    out = evaluate_rules([parse_rule(kind, text)], cand, base)
    return out.results[0].passed


# ------------------------------------------------------------------ parsing


def test_metric_names_are_the_headline_keys(samples):
    assert tuple(read_result(samples.weak_json).headline()) == HEADLINE_METRICS


@pytest.mark.parametrize("kind,text,expect", [
    ("max", "opis=0.02", Rule("max", "opis", 0.02)),
    ("min", "recall_at_1=0.9", Rule("min", "recall_at_1", 0.9)),
    ("max-increase", "opis=0.002", Rule("max-increase", "opis", 0.002)),
    ("max-increase", "opis=10%", Rule("max-increase", "opis", 0.1, relative=True)),
    ("max-decrease", " map_at_r = 2.5% ", Rule("max-decrease", "map_at_r", 0.025, relative=True)),
    ("max-increase", "epsilon_opis=ci", Rule("max-increase", "epsilon_opis", 0.0, ci=True)),
    ("max-decrease", "opis=CI", Rule("max-decrease", "opis", 0.0, ci=True)),
])
def test_rule_forms(kind, text, expect):
    r = parse_rule(kind, text)
    assert (r.kind, r.metric, r.relative, r.ci) == (expect.kind, expect.metric, expect.relative,
                                                    expect.ci)
    assert r.amount == pytest.approx(expect.amount)


@pytest.mark.parametrize("kind,text,message", [
    ("max", "opis", "expected METRIC=VALUE"),
    ("max", "=0.1", "expected METRIC=VALUE"),
    ("max", "opsi=0.1", "unknown metric 'opsi'"),
    ("max", "opis=abc", "expected a number"),
    ("max", "opis=10%", "only apply to max-increase"),
    ("min", "opis=ci", "only apply to max-increase"),
    ("max-increase", "recall_at_1=ci", "available for opis, epsilon_opis only"),
    ("max-increase", "opis=-1", "must be >= 0"),
    ("max", "opis=nan", "finite"),
])
def test_bad_rules(kind, text, message):
    with pytest.raises(ConfigError, match=message):
        parse_rule(kind, text)


def test_unknown_metric_lists_every_valid_name():
    with pytest.raises(ConfigError) as e:
        parse_rule("max", "xyz=0.9")  # near no name: the list
    for name in HEADLINE_METRICS:
        assert name in str(e.value)
    with pytest.raises(ConfigError, match=r"did you mean 'recall_at_1'\?$"):
        parse_rule("max", "recall@1=0.9")


# ------------------------------------------------------------------ verdicts


def test_max_and_min():
    assert verdict("max", "opis=0.02", side(opis=0.0199))
    assert verdict("max", "opis=0.02", side(opis=0.02))            # the limit itself passes
    assert not verdict("max", "opis=0.02", side(opis=0.0201))
    assert verdict("min", "recall_at_1=0.9", side(recall_at_1=0.9))
    assert not verdict("min", "recall_at_1=0.9", side(recall_at_1=0.8999))


def test_absolute_changes():
    base = side("base", opis=0.010, map_at_r=0.70)
    assert verdict("max-increase", "opis=0.002", side(opis=0.012), base)
    assert not verdict("max-increase", "opis=0.002", side(opis=0.0121), base)
    assert verdict("max-increase", "opis=0", side(opis=0.009), base)
    assert verdict("max-decrease", "map_at_r=0.05", side(map_at_r=0.65), base)
    assert not verdict("max-decrease", "map_at_r=0.05", side(map_at_r=0.649), base)


def test_relative_changes():
    base = side("base", opis=0.02, recall_at_1=0.9)
    # +10% of 0.02 -> limit 0.022; -1% of 0.9 -> limit 0.891
    assert verdict("max-increase", "opis=10%", side(opis=0.0219), base)
    assert not verdict("max-increase", "opis=10%", side(opis=0.0221), base)
    assert verdict("max-decrease", "recall_at_1=1%", side(recall_at_1=0.8915), base)
    assert not verdict("max-decrease", "recall_at_1=1%", side(recall_at_1=0.8905), base)
    zero = side("base", opis=0.0)
    assert verdict("max-increase", "opis=50%", side(opis=0.0), zero)
    assert not verdict("max-increase", "opis=50%", side(opis=1e-9), zero)


def test_limits_and_messages_in_the_outcome():
    base = side("base", opis=0.02)
    out = evaluate_rules([parse_rule("max-increase", "opis=10%")], side(opis=0.03), base)
    r = out.results[0]
    assert r.limit == pytest.approx(0.022) and r.baseline == 0.02 and r.value == 0.03
    assert "+50.0%" in r.message and not out.passed and out.exit_code == 1


def test_not_a_number_fails():
    assert not verdict("max", "opis=1", side(opis=float("nan")))
    assert not verdict("max-increase", "opis=1", side(opis=0.1), side("b", opis=math.nan))


def _boot(values: np.ndarray, labels=("a", "b", "c"), seed=0) -> Bootstrap:
    return Bootstrap(resamples=len(values), seed=seed, confidence=0.95, classes=len(labels),
                     labels_sha256=labels_digest(labels),
                     estimate={"opis": float(np.median(values)),
                               "epsilon_opis": float(np.median(values))},
                     replicates={"opis": values, "epsilon_opis": values})


def test_ci_rule_fails_only_beyond_the_interval():
    reps = np.linspace(0.01, 0.03, 101)
    base = side("base", _boot(reps), opis=0.02)
    same = side("cand", _boot(reps.copy()), opis=0.02)
    noisy_up = side("cand", _boot(reps + np.linspace(-0.004, 0.006, 101)), opis=0.021)
    shifted = side("cand", _boot(reps + 0.005), opis=0.025)
    rule = parse_rule("max-increase", "opis=ci")
    assert evaluate_rules([rule], same, base).passed
    # per-replicate differences -0.004..+0.006: the interval includes 0
    assert evaluate_rules([rule], noisy_up, base).passed
    out = evaluate_rules([rule], shifted, base)   # every replicate +0.005
    assert not out.passed
    r = out.results[0]
    assert r.interval.method == "paired" and r.interval.lower == pytest.approx(0.005)
    assert r.value == pytest.approx(0.005)
    # the decrease form looks at the other end
    assert evaluate_rules([parse_rule("max-decrease", "opis=ci")], shifted, base).passed
    assert not evaluate_rules([parse_rule("max-decrease", "opis=ci")], base, shifted).passed


def test_ci_rule_without_bootstrap_is_an_input_error():
    with pytest.raises(InputError, match="needs bootstrap replicates"):
        evaluate_rules([parse_rule("max-increase", "opis=ci")], side(), side("b"))


def test_missing_rules_or_baseline_are_usage_errors():
    with pytest.raises(ConfigError, match="no gate rules"):
        evaluate_rules([], side())
    with pytest.raises(ConfigError, match="--baseline"):
        evaluate_rules([parse_rule("max-increase", "opis=1%")], side())


# ------------------------------------------------------------------ config files


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def texts(cfg) -> list[str]:
    return [r.text for r in cfg.rules]


def test_pyproject_table_and_list_forms(tmp_path):
    p = write(tmp_path / "pyproject.toml", """
[project]
name = "x"
[tool.opis.gate]
baseline = "models/base.json"
confidence = 0.9
max = { opis = 0.02, epsilon_opis = 0.1 }
min = ["recall_at_1=0.9"]
max_increase = { opis = "10%", epsilon_opis = "ci" }
max-decrease = { map_at_r = 0.01 }
""")
    cfg = load_config(p)
    assert texts(cfg) == ["max opis=0.02", "max epsilon_opis=0.1", "min recall_at_1=0.9",
                          "max-increase opis=10%", "max-increase epsilon_opis=ci",
                          "max-decrease map_at_r=0.01"]
    assert cfg.baseline == tmp_path / "models" / "base.json"
    assert cfg.confidence == 0.9
    assert all(r.source == str(p) for r in cfg.rules)


def test_opis_toml_gate_table_and_flat_forms(tmp_path):
    a = load_config(write(tmp_path / "a" / "opis.toml", '[gate]\nmax = { opis = 0.03 }\n'))
    b = load_config(write(tmp_path / "b" / "opis.toml", 'max = { opis = 0.03 }\n'))
    assert texts(a) == texts(b) == ["max opis=0.03"]


@pytest.mark.parametrize("text,message", [
    ("[tool.opis.gate]\nmaximum = { opis = 1 }\n", "unknown gate key 'maximum'"),
    ("[tool.opis.gate]\nmax = { opsi = 1 }\n", "unknown metric 'opsi'"),
    ("[tool.opis.gate]\nmax = 0.3\n", "expected a table"),
    ("[tool.opis.gate]\nconfidence = 2\n", "confidence"),
    ("[tool.opis.gate\n", "invalid TOML"),
])
def test_config_errors_name_the_file(tmp_path, text, message):
    p = write(tmp_path / "pyproject.toml", text)
    with pytest.raises(ConfigError, match=message) as e:
        load_config(p)
    assert str(p) in str(e.value)


def test_discovery_walks_up_and_stops_at_the_repository_root(tmp_path):
    root = tmp_path / "repo"
    (root / ".git").mkdir(parents=True)
    deep = root / "a" / "b"
    deep.mkdir(parents=True)
    assert find_config(deep) is None
    write(root / "pyproject.toml", "[project]\nname = 'x'\n")          # no [tool.opis]
    assert find_config(deep) is None
    write(root / "pyproject.toml", "[tool.opis.gate]\nmax = { opis = 1 }\n")
    assert find_config(deep) == (root / "pyproject.toml").resolve()
    write(root / "a" / "opis.toml", "max = { opis = 2 }\n")             # nearer wins
    assert find_config(deep) == (root / "a" / "opis.toml").resolve()
    write(deep / "pyproject.toml", "[tool.opis]\n")                       # an opis section
    write(deep / "opis.toml", "[gate]\n")                                 # opis.toml first
    assert find_config(deep) == (deep / "opis.toml").resolve()
    # above the repository root nothing is read
    write(tmp_path / "opis.toml", "max = { opis = 3 }\n")
    (root / "a" / "opis.toml").unlink()
    (root / "pyproject.toml").unlink()
    assert find_config(root / "a") is None


# ------------------------------------------------------------------ renderings


def _outcome():
    base = side("base.json", opis=0.02, recall_at_1=0.9)
    rules = [parse_rule("max", "opis=0.025"), parse_rule("max-increase", "opis=10%"),
             parse_rule("min", "recall_at_1=0.95")]
    return evaluate_rules(rules, side("cand.json", opis=0.024, recall_at_1=0.97), base)


def test_junit_one_testcase_per_rule():
    out = _outcome()
    root = ET.fromstring(junit_xml(out))
    suite = root.find("testsuite")
    assert root.get("tests") == suite.get("tests") == "3"
    assert root.get("failures") == suite.get("failures") == "1"
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["max opis=0.025", "max-increase opis=10%",
                                              "min recall_at_1=0.95"]
    failed = [c for c in cases if c.find("failure") is not None]
    assert [c.get("name") for c in failed] == ["max-increase opis=10%"]
    msg = failed[0].find("failure").get("message")
    assert "0.02 -> 0.024" in msg and "limit 0.022" in msg


def test_markdown_summary():
    md = markdown(_outcome(), {"opis": 0.024})
    assert md.startswith("### opis gate: FAILED")
    assert "| `max-increase opis=10%` | 0.024 | 0.02 | 0.022 | **FAIL** |" in md
    assert "| `max opis=0.025` | 0.024 | n/a | 0.025 | pass |" in md
    assert "| opis | 0.024 |" in md


# ------------------------------------------------------------------ opis gate




def test_gate_the_better_model_passes_and_the_worse_fails(samples, capsys, isolated):
    rules = ["--max-increase", "opis=10%", "--max-increase", "epsilon_opis=10%",
             "--max-decrease", "recall_at_1=0.01", "--max-increase", "opis=ci"]
    code, out, err = run(capsys, "gate", samples.strong_json, "--baseline", samples.weak_json,
                         *rules)
    assert code == 0, err
    assert "Gate passed: all 4 rules hold." in out  # the verdict goes to stdout
    code, out, err = run(capsys, "gate", samples.weak_json, "--baseline", samples.strong_json,
                         *rules)
    assert code == 1
    assert "Gate FAILED: 4 of 4 rules broken." in out and err == ""


def test_gate_absolute_rules(samples, capsys, isolated):
    code, _, _ = run(capsys, "gate", samples.strong_json, "--max", "opis=0.01",
                     "--min", "recall_at_1=0.95", "--min", "map_at_r=0.7")
    assert code == 0
    code, out, _ = run(capsys, "gate", samples.weak_json, "--max", "opis=0.01",
                       "--min", "recall_at_1=0.95")
    assert code == 1 and "max opis=0.01" in out


def test_gate_a_model_against_itself_is_not_flagged(samples, capsys, isolated):
    for j in (samples.weak_json, samples.strong_json):
        code, out, _ = run(capsys, "gate", j, "--baseline", j, "--max-increase", "opis=ci",
                           "--max-increase", "epsilon_opis=ci", "--max-increase", "opis=0",
                           "--json", "-", "-q")
        assert code == 0
        doc = json.loads(out)
        iv = doc["results"][0]["interval"]
        assert iv["method"] == "paired" and iv["lower"] == 0.0 and iv["upper"] == 0.0


def test_gate_ci_from_curves_tables_matches_the_stored_bootstrap(samples, capsys, isolated,
                                                                 tmp_path):
    # Results without a stored bootstrap, plus their --curves tables.
    plain = {}
    for name in ("weak", "strong"):
        doc = json.loads(getattr(samples, f"{name}_json").read_text())
        doc.pop("bootstrap")
        plain[name] = write(tmp_path / f"{name}_plain.json", json.dumps(doc))
    args = ["--max-increase", "opis=ci", "--json", "-", "-q"]
    code, out, err = run(capsys, "gate", plain["weak"], "--baseline", plain["strong"], *args)
    assert code == 2 and "needs bootstrap replicates" in err
    code, out, _ = run(capsys, "gate", plain["weak"], "--curves", samples.weak_curves,
                       "--baseline", plain["strong"], "--baseline-curves", samples.strong_curves,
                       "--bootstrap", "200", "--seed", "7", *args)
    assert code == 1
    from_curves = json.loads(out)["results"][0]["interval"]
    code, out, _ = run(capsys, "gate", samples.weak_json, "--baseline", samples.strong_json,
                       *args)
    assert code == 1
    assert json.loads(out)["results"][0]["interval"] == pytest.approx(from_curves)


def test_gate_json_and_junit_outputs(samples, capsys, isolated):
    code, out, _ = run(capsys, "gate", samples.weak_json, "--max", "opis=0.01",
                       "--min", "recall_at_1=0.9", "--json", "-", "--junit", "gate.xml",
                       "--markdown", "gate.md", "-q")
    assert code == 1
    doc = json.loads(out)
    assert doc["passed"] is False and doc["rules"] == 2 and doc["failures"] == 1
    weak_opis = json.loads(samples.weak_json.read_text())["opis"]
    assert doc["results"][0]["value"] == weak_opis and doc["results"][0]["passed"] is False
    assert doc["results"][1]["passed"] is True
    suite = ET.parse(isolated / "gate.xml").getroot().find("testsuite")
    assert suite.get("tests") == "2" and suite.get("failures") == "1"
    md = (isolated / "gate.md").read_text()
    # the verdict of the result first, the gate outcome right after it
    assert md.startswith("### Can one threshold serve every class?\n\n:warning: **Partly**: at "
                         "global FAR 10%")
    assert "\n### opis gate: FAILED" in md
    assert not list(isolated.glob(".*.tmp"))


def test_gate_reads_the_config_it_finds(samples, capsys, isolated):
    write(isolated / "pyproject.toml", f"""
[tool.opis.gate]
baseline = "{samples.strong_json.as_posix()}"
max-increase = {{ opis = "10%" }}
""")
    sub = isolated / "sub"
    sub.mkdir()
    import os
    os.chdir(sub)
    code, out, _ = run(capsys, "gate", samples.weak_json, "--json", "-", "-q")
    assert code == 1
    doc = json.loads(out)
    assert [r["rule"] for r in doc["results"]] == ["max-increase opis=10%"]
    assert doc["results"][0]["source"].endswith("pyproject.toml")
    # command-line rules add to the config's
    code, out, _ = run(capsys, "gate", samples.strong_json, "--max", "opis=0.01", "--json", "-",
                       "-q")
    assert code == 0
    assert [r["rule"] for r in json.loads(out)["results"]] == ["max-increase opis=10%",
                                                             "max opis=0.01"]
    # --no-config: only the command line counts
    code, _, err = run(capsys, "gate", samples.weak_json, "--no-config")
    assert code == 2 and "no gate rules" in err
    # an explicit opis.toml
    cfg = write(isolated / "other" / "opis.toml", "[gate]\nmax = { opis = 1.0 }\n")
    code, out, _ = run(capsys, "gate", samples.weak_json, "--config", cfg, "--json", "-", "-q")
    assert code == 0 and json.loads(out)["rules"] == 1


@pytest.mark.parametrize("args,needle", [
    (["--max", "opsi=0.1"], "unknown metric 'opsi'"),
    (["--max", "opis"], "expected METRIC=VALUE"),
    (["--max-increase", "opis=10%"], "--baseline"),
    ([], "no gate rules"),
    (["--max", "opis=1", "--baseline", "missing.json"], "missing.json"),
    (["--max", "opis=1", "--confidence", "1.5"], "confidence"),
    (["--max", "opis=1", "--junit", "no/such/folder/x.xml"], "does not exist"),
])
def test_gate_usage_errors_exit_2_with_one_line(samples, capsys, isolated, args, needle):
    code, out, err = run(capsys, "gate", samples.weak_json, *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and needle in lines[0], err
    assert out == ""


def test_gate_unknown_metric_suggests_the_nearest_or_lists_the_valid_names(samples, capsys,
                                                                          isolated):
    code, _, err = run(capsys, "gate", samples.weak_json, "--min", "recall@1=0.9")
    assert code == 2
    assert "unknown metric 'recall@1' in --min recall@1=0.9; did you mean 'recall_at_1'?" in err
    code, _, err = run(capsys, "gate", samples.weak_json, "--min", "qqqq=0.9")
    assert code == 2
    assert "valid names: " + ", ".join(HEADLINE_METRICS) in err


@pytest.mark.parametrize("content,needle", [
    ("{not json", "not valid JSON"),
    ('{"a": 1}', "not an opis result"),
])
def test_gate_bad_result_files(capsys, isolated, content, needle):
    p = write(isolated / "r.json", content)
    code, _, err = run(capsys, "gate", p, "--max", "opis=1")
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------ opis evaluate with rules


def test_evaluate_with_rules(samples, capsys, isolated):
    code, out, err = run(capsys, "evaluate", WEAK, "--baseline", samples.strong_json,
                         "--max-increase", "opis=10%", "--max-increase", "opis=ci",
                         "--max", "opis=0.05", "--junit", "junit.xml", "--json", "weak.json")
    assert code == 1
    assert "Gate FAILED: 2 of 3 rules broken." in out
    assert err.splitlines() == ["wrote weak.json", "wrote junit.xml"]
    suite = ET.parse(isolated / "junit.xml").getroot().find("testsuite")
    assert suite.get("tests") == "3" and suite.get("failures") == "2"
    assert json.loads((isolated / "weak.json").read_text())["opis"] > 0.02  # result still written
    code, _, err = run(capsys, "evaluate", STRONG, "--baseline", samples.weak_json,
                       "--max-increase", "opis=ci", "--max", "opis=0.01", "-q")
    assert code == 0 and err == ""


def test_evaluate_checks_rules_before_the_work(capsys, isolated):
    code, _, err = run(capsys, "evaluate", "no-such-file.parquet", "--max", "opsi=1")
    assert code == 2 and "unknown metric 'opsi'" in err
    code, _, err = run(capsys, "evaluate", "no-such-file.parquet", "--max-increase", "opis=1%")
    assert code == 2 and "--baseline" in err
