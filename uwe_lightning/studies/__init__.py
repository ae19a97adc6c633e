"""Sweep reports: read a multirun's run directories back, group them by what the sweep varied, and write
mean ± 95 % CI tables (per task and macro, n per cell) and figures (bars, temperature curve, knowledge-gain
heatmap). ``python -m uwe_lightning.report <multirun dir>`` is the command line
(:mod:`uwe_lightning.cli.report`).
"""

from uwe_lightning.studies.aggregate import KINDS, choose_kind
from uwe_lightning.studies.report import build_report, make_report, write_report
from uwe_lightning.studies.runs import Run, Skipped, find_run_dirs, group_runs, load_runs
from uwe_lightning.studies.stats import Summary, summarize, t_quantile

__all__ = [
    "KINDS",
    "Run",
    "Skipped",
    "Summary",
    "build_report",
    "choose_kind",
    "find_run_dirs",
    "group_runs",
    "load_runs",
    "make_report",
    "summarize",
    "t_quantile",
    "write_report",
]
