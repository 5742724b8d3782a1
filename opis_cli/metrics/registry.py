"""The metrics registry: every metric a gate rule, a comparison or a tracker names.

One table (:data:`METRICS`): the key (the name in rules, comparisons and
MLflow), whether higher or lower is better, where the number lives in its
JSON document (a path of keys), a short human name and a line of doc. The
gate's metric lists and directions (``opis_cli.gate.rules``), the headline's
keys, the MLflow names (``opis_cli.integrations.mlflow``) and the table of
``docs/reference/metrics.md`` are derived from it; ``tests/test_metrics_registry.py``
ties every entry to a real path of a result document.

Pure Python: no numpy, importable from anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

#: direction: higher is better, lower is better, or neither (a threshold)
HIGHER, LOWER, NEITHER = 1, -1, 0

#: the families, in table order: rules accept the first four; ``group`` (the
#: group block's scores) goes to trackers only
FAMILIES = ("headline", "fairness", "verification", "deployment", "diagnosis", "group")
#: the families gate rules accept
RULE_FAMILIES = FAMILIES[:5]
#: the families ``opis_cli.integrations.mlflow.evaluation_metrics`` logs
TRACKED_FAMILIES = ("headline", "fairness", "verification", "group")

#: the FNMR-at-FMR levels of SPEC 14, as their JSON keys
FMR_KEYS = ("1e-01", "1e-02", "1e-03", "1e-04", "1e-05", "1e-06")


@dataclass(frozen=True)
class Metric:
    """One metric.

    ``path`` is where the number lives: in the result JSON (``document ==
    "result"``), or in ``opis compare``'s JSON for the deployment view
    (``document == "comparison"``).
    """

    key: str
    direction: int
    path: tuple[str, ...]
    name: str
    doc: str
    family: str
    document: str = "result"

    @property
    def better(self) -> str:
        return {HIGHER: "higher", LOWER: "lower", NEITHER: "neither"}[self.direction]


def _h(key, direction, path, name, doc):
    return Metric(key, direction, tuple(path.split(".")), name, doc, "headline")


def _f(key, direction, path, name, doc):
    return Metric(key, direction, tuple(path.split(".")), name, doc, "fairness")


_RT = "recommended_threshold"

#: every metric, in the order of the headline, then fairness, verification, deployment,
#: diagnosis
METRICS: tuple[Metric, ...] = (
    _h("opis", LOWER, "opis", "OPIS",
       "variance of the per-class utility curves over the calibration range (SPEC 6)"),
    _h("epsilon_opis", LOWER, "epsilon_opis", "10%-OPIS",
       "squared gap between the worst 10% of classes and the rest (SPEC 6)"),
    *(_h(f"recall_at_{k}", HIGHER, f"retrieval.recall_at_k.{k}", f"R@{k}",
         f"fraction of queries with a positive among the k = {k} nearest (SPEC 6)")
      for k in (1, 2, 4, 8)),
    _h("map_at_r", HIGHER, "retrieval.map_at_r", "MAP@R",
       "mean average precision at R (Musgrave et al., 2020)"),
    _h("r_precision", HIGHER, "retrieval.r_precision", "R-Precision",
       "mean fraction of positives among each query's R nearest neighbours (SPEC 6)"),
    _h("threshold", NEITHER, f"{_RT}.value", "threshold",
       "the recommended distance threshold"),
    _h("mean_utility", HIGHER, f"{_RT}.mean_utility", "mean utility",
       "mean utility of the classes at the threshold"),
    _h("worst_mean_utility", HIGHER, f"{_RT}.worst_mean_utility", "worst mean utility",
       "mean utility of the worst classes at the threshold"),
    _h("tpr", HIGHER, f"{_RT}.tpr", "TPR", "global true positive rate at the threshold"),
    _h("far", LOWER, f"{_RT}.far", "FAR", "global false accept rate at the threshold"),
    _h("frr", LOWER, f"{_RT}.frr", "FRR", "global false reject rate at the threshold"),
    _h("fraction_far_above_2x", LOWER, f"{_RT}.fraction_far_above_2x", "classes FAR > 2x",
       "fraction of classes whose FAR exceeds twice the global FAR"),
    _f("fdr", HIGHER, f"{_RT}.fairness.fdr", "FDR",
       "fairness discrepancy rate at the threshold (SPEC 13)"),
    _f("garbe", LOWER, f"{_RT}.fairness.garbe", "GARBE",
       "Gini aggregation rate for biometric equitability at the threshold (SPEC 13)"),
    _f("far_ratio", LOWER, f"{_RT}.fairness.far_ratio", "FAR ratio",
       "largest class FAR over the global FAR (SPEC 13)"),
    _f("frr_ratio", LOWER, f"{_RT}.fairness.frr_ratio", "FRR ratio",
       "largest class FRR over the global FRR (SPEC 13)"),
    _f("inequity_rate", LOWER, f"{_RT}.fairness.inequity_rate", "inequity rate",
       "(max FAR / min FAR)^alpha (max FRR / min FRR)^(1 - alpha) over the classes (SPEC 13)"),
    _f("fdr_mean", HIGHER, "fairness.fdr_mean", "FDR over the range",
       "FDR averaged over the calibration range (SPEC 13)"),
    _f("garbe_mean", LOWER, "fairness.garbe_mean", "GARBE over the range",
       "GARBE averaged over the calibration range (SPEC 13)"),
    Metric("eer", LOWER, ("verification", "eer"), "EER", "equal error rate (SPEC 14)",
           "verification"),
    Metric("min_dcf", LOWER, ("verification", "min_dcf"), "minDCF",
           "normalised minimum detection cost (SPEC 14)", "verification"),
    *(Metric(f"fnmr_at_fmr_{k}", LOWER, ("verification", "fnmr_at_fmr", k), f"FNMR @ FMR {k}",
             f"false non-match rate where the false match rate is {k} (SPEC 14)",
             "verification") for k in FMR_KEYS),
    *(Metric(f"deployed_{r}", d, ("deployment", "candidate", r), f"deployed {r.upper()}",
             f"the candidate's {r.upper()} at the baseline's deployed threshold (opis compare)",
             "deployment", "comparison")
      for r, d in (("far", LOWER), ("tpr", HIGHER), ("frr", LOWER))),
    Metric("deployed_far_ratio", LOWER, ("deployment", "far_ratio"), "deployed FAR ratio",
           "candidate FAR / baseline FAR at the baseline's deployed threshold (opis compare)",
           "deployment", "comparison"),
    *(Metric(key, LOWER, ("diagnosis",) + tuple(path.split(".")), name, doc, "diagnosis")
      for key, path, name, doc in (
          ("overlapping_pairs", "overlap.count", "overlapping class pairs",
           "pairs of classes that accept each other's rows at least as often as their own "
           "(SPEC 16; with --diagnose)"),
          ("suspect_rows", "suspects.count", "suspect rows",
           "rows whose 3 nearest neighbours carry one other label and none of whose positives "
           "is accepted (SPEC 16; with --diagnose)"),
          ("suspect_fraction", "suspects.fraction", "suspect share",
           "suspect rows / query rows with a positive (SPEC 16; with --diagnose)"),
          ("conflicting_duplicate_groups", "duplicates.groups", "conflicting duplicates",
           "groups of identical rows that carry two or more labels (SPEC 16; with --diagnose)"))),
    Metric("group_opis", LOWER, ("groups", "opis"), "group OPIS",
           "OPIS across groups (SPEC 7; with a group column)", "group"),
    Metric("group_epsilon_opis", LOWER, ("groups", "epsilon_opis"), "group 10%-OPIS",
           "10%-OPIS across groups (SPEC 7; with a group column)", "group"),
)

BY_KEY: Mapping[str, Metric] = {m.key: m for m in METRICS}


def keys(*families: str) -> tuple[str, ...]:
    """The keys of these families (every key when none is named), in table order."""
    unknown = set(families) - set(FAMILIES)
    if unknown:
        raise ValueError(f"unknown metric families {sorted(unknown)}")
    return tuple(m.key for m in METRICS if not families or m.family in families)


#: +1 higher is better, -1 lower is better, 0 neither, by key
DIRECTION: Mapping[str, int] = {m.key: m.direction for m in METRICS}


def lookup(document: Mapping[str, Any], metric: Metric) -> Any:
    """The value at ``metric.path`` of a JSON document; ``KeyError`` when absent."""
    v: Any = document
    for p in metric.path:
        v = v[p]
    return v


def markdown_table() -> str:
    """The docs table (``docs/reference/metrics.md``): key, name, better, JSON path, doc."""
    rows = ["| key | metric | better | where in the JSON | what |", "|---|---|---|---|---|"]
    for m in METRICS:
        where = ".".join(m.path) + (" (compare JSON)" if m.document == "comparison" else "")
        rows.append(f"| `{m.key}` | {m.name} | {m.better} | `{where}` | {m.doc} |")
    return "\n".join(rows) + "\n"
