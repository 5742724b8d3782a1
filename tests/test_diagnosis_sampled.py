"""SPEC 16 estimated from the sampled engine's draws, and said to be an estimate.

Against ``diagnosis_reference.py`` (every pair in float64, from the SPEC
text): with every pair drawn (``S >= ng``) the diagnosis equals the exact
one; with fewer, the rejected rows, suspects and duplicates are exact, every
class pair it lists truly accepts, and the estimates of the accepted
negatives average out to the true count over seeds (Horvitz-Thompson).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import opis_cli
from opis_cli.cli import main
from opis_cli.diagnosis import Diagnosis
from opis_cli.engines.sampled import SampledEngine
from test_diagnosis import assert_same, engine_case


def _case(seed: int):
    x, lab, kw, want = engine_case(seed)
    return x, [str(v) for v in lab], kw, want


@pytest.mark.parametrize("seed", range(6))
def test_every_pair_drawn_equals_exact(seed):
    x, lab, kw, want = _case(seed)
    exact = opis_cli.evaluate(x, lab, **kw)
    res = opis_cli.evaluate(x, lab, engine=SampledEngine(negatives_per_query=10_000, seed=seed),
                            **kw)
    doc = res.diagnosis.to_dict()
    est = doc.pop("estimate")
    assert est["every_pair"] and est["estimated"] == [] and est["scale"] == 1.0
    assert "every count is exact" in est["note"]
    assert json.dumps(doc) == json.dumps(exact.diagnosis.to_dict())
    cols = res.diagnosis.pairs.columns()
    assert {(a, b): int(v) for a, b, v in zip(cols["label"], cols["impostor"],
                                              cols["accepts"])} == want["_A"]


@pytest.mark.parametrize("seed", range(12))
def test_few_draws_exact_parts_and_real_pairs(seed):
    x, lab, kw, want = _case(seed)
    res = opis_cli.evaluate(x, lab, engine=SampledEngine(negatives_per_query=10, seed=seed),
                            **kw)
    d = res.diagnosis
    doc = d.to_dict()
    est = doc["estimate"]
    assert not est["every_pair"] and est["negatives_per_query"] == 10 and est["seed"] == seed
    assert est["estimated"] == ["impostors", "overlap", "pairs"]
    assert est["pairs_drawn"] == 10 * sum(1 for i in range(len(lab))
                                         if kw["is_query"] is None or kw["is_query"][i])
    # exact parts
    assert_same(doc["rejected_rows"], want["rejected_rows"])
    assert_same(doc["duplicates"], want["duplicates"])
    n_pos = want["_queries_with_positives"]
    assert_same(doc["suspects"], {"count": want["suspects"]["count"],
                                  "queries_with_positives": n_pos,
                                  "fraction": want["suspects"]["count"] / n_pos if n_pos else None,
                                  "rows": want["suspects"]["rows"]})
    # a listed class pair was drawn accepting: it truly accepts; its estimate
    # is a whole number of pairs, at least 1, at most N(c, c') * scale
    cols = d.pairs.columns()
    for a, b, v, n in zip(cols["label"], cols["impostor"], cols["accepts"], cols["pairs"]):
        assert (a, b) in want["_A"]
        assert 1 <= int(v) and int(n) == want["_N"][a, b]
    assert est["accepted_pairs_drawn"] <= sum(want["_A"].values())


def test_estimates_average_to_the_true_counts():
    """Horvitz-Thompson: over many seeds the mean estimate of all accepted negatives
    is close to the true number (a fixed set of seeds: deterministic)."""
    x, lab, kw, want = _case(5)
    true = sum(want["_A"].values())
    assert true > 100
    est = [int(opis_cli.evaluate(x, lab, engine=SampledEngine(negatives_per_query=20, seed=s),
                                 **kw).diagnosis.pairs.accepts.sum()) for s in range(24)]
    assert abs(np.mean(est) - true) <= 0.1 * true, (np.mean(est), true)
    assert len(set(est)) > 1  # really sampled


def test_json_roundtrip_and_every_output_says_estimate(tmp_path, capsys):
    from opis_cli.render.report.drilldown import drilldown_data
    from opis_cli.render.report.html import render_report

    x, lab, kw, _ = _case(2)
    res = opis_cli.evaluate(x, lab, engine=SampledEngine(negatives_per_query=10, seed=3), **kw)
    doc = res.diagnosis.to_dict()
    assert Diagnosis.from_dict(json.loads(json.dumps(doc))).to_dict() == doc
    note = res.diagnosis.source_note
    assert note.startswith("estimated from sampled negatives (10 per query, seed 3,")
    page = render_report(res, {})
    section = page[page.index('id="where-it-fails"'):]
    assert note in section[:section.index("</section>")]
    assert drilldown_data(res, None)["diagnosis_note"] == note
    emb = tmp_path / "e.npy"
    np.save(emb, x)
    labels = tmp_path / "e.txt"
    labels.write_text("".join(f"{v}\n" for v in lab))
    js = tmp_path / "r.json"
    capsys.readouterr()
    code = main(["evaluate", str(emb), "--labels", str(labels), "--metric", kw["metric"],
                 "--engine", "sampled", "--negatives-per-query", "10", "--seed", "3",
                 "--diagnose", "--threshold", repr(kw["threshold"]),
                 "--calibration-range", "0.1:0.9", "--json", str(js)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "estimated from sampled negatives (10 per query, seed 3," in out
    assert json.loads(js.read_text())["diagnosis"]["estimate"]["seed"] == 3
