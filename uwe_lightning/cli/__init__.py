"""Command-line entry points (thin Hydra mains); ``python -m uwe_lightning.<name>`` shims call them.

Every command's ``--help`` says which convention it follows (the table: docs/reference/cli.md): a Hydra app
(``key=value`` / ``group=option`` overrides, ``-m`` sweeps, a run directory per run), Hydra's compose API without
a run directory (campaign, bundle), or a plain argparse CLI where a config tree would add nothing.
"""

#: How a plain (argparse) command says so in its help, followed by why.
PLAIN_CLI = "Convention: plain CLI (argparse), not Hydra"
