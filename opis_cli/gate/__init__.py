"""Release gating and model comparison; no typer, no rich.

``rules``: rules on headline metrics, their config file, the outcome;
``compare``: the comparison of two results; ``sides``: reading, evaluating
and pairing the two sides (what ``opis evaluate/gate/compare`` do between
their options and their output). ``opis_cli.render`` shows the outcomes.
"""
