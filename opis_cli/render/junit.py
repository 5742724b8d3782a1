"""A gate outcome as JUnit XML (``--junit``), for CI test reports."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from ..gate.rules import GateOutcome
from .escape import xml_message, xml_text


def junit_xml(outcome: GateOutcome, suite: str = "opis gate") -> str:
    """JUnit XML: one ``<testcase>`` per rule, a ``<failure>`` for each failed rule.

    User text goes through :func:`~opis_cli.render.escape.xml_text` (messages
    :func:`~opis_cli.render.escape.xml_message`): XML 1.0 cannot hold most
    control characters even as character references, so they are written
    as visible escapes (``\\x1b``) before ElementTree escapes ``<>&"``.
    """
    n, f = len(outcome.results), outcome.failures
    root = ET.Element("testsuites", name=suite, tests=str(n), failures=str(f), errors="0")
    ts = ET.SubElement(root, "testsuite", name=suite, tests=str(n), failures=str(f),
                       errors="0", skipped="0")
    props = ET.SubElement(ts, "properties")
    ET.SubElement(props, "property", name="candidate", value=xml_text(outcome.candidate))
    if outcome.baseline:
        ET.SubElement(props, "property", name="baseline", value=xml_text(outcome.baseline))
    for r in outcome.results:
        tc = ET.SubElement(ts, "testcase", classname=f"opis.gate.{r.rule.metric}",
                           name=xml_text(r.rule.text), time="0")
        message = xml_message(r.message)
        if not r.passed:
            fail = ET.SubElement(tc, "failure", message=message, type="GateRuleFailed")
            fail.text = f"{xml_text(r.rule.text)} (from {xml_text(r.rule.source)}): {message}"
        else:
            out = ET.SubElement(tc, "system-out")
            out.text = message
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
