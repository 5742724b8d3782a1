"""Release gating and model comparison; no typer, no rich.

``rules``: rules on headline metrics, their config file, the outcome;
``compare``: the comparison of two results; ``sides``: the rules, bootstraps
and deployment view of the two sides (read or evaluated by ``opis_cli.app``).
``opis_cli.render`` shows the outcomes.
"""
