"""A gate outcome as JUnit XML (``--junit``), for CI test reports."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from ..gate.rules import GateOutcome


def junit_xml(outcome: GateOutcome, suite: str = "opis gate") -> str:
    """JUnit XML: one ``<testcase>`` per rule, a ``<failure>`` for each failed rule."""
    n, f = len(outcome.results), outcome.failures
    root = ET.Element("testsuites", name=suite, tests=str(n), failures=str(f), errors="0")
    ts = ET.SubElement(root, "testsuite", name=suite, tests=str(n), failures=str(f),
                       errors="0", skipped="0")
    props = ET.SubElement(ts, "properties")
    ET.SubElement(props, "property", name="candidate", value=outcome.candidate)
    if outcome.baseline:
        ET.SubElement(props, "property", name="baseline", value=outcome.baseline)
    for r in outcome.results:
        tc = ET.SubElement(ts, "testcase", classname=f"opis.gate.{r.rule.metric}",
                           name=r.rule.text, time="0")
        if not r.passed:
            fail = ET.SubElement(tc, "failure", message=r.message, type="GateRuleFailed")
            fail.text = f"{r.rule.text} (from {r.rule.source}): {r.message}"
        else:
            out = ET.SubElement(tc, "system-out")
            out.text = r.message
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
