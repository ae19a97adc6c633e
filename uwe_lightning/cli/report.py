"""``python -m uwe_lightning.report <multirun dir | run dirs...> [out=DIR] [kind=KIND]``: a sweep's report.

Hydra-free on purpose: it reads finished runs back and trains nothing, so it needs no config tree. Options
use the ``key=value`` form of the other commands; a wrong input is one ``[report] error: ...`` line, exit
status 2.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from pathlib import Path

from uwe_lightning.cli import PLAIN_CLI
from uwe_lightning.cli.errors import run_reporting_user_errors, take_debug_flag
from uwe_lightning.io import ConfigError
from uwe_lightning.studies import KINDS, build_report, write_report
from uwe_lightning.studies.report import default_out_dir

TOOL = "report"
OPTIONS = ("out", "kind", "optuna")
USAGE = ("python -m uwe_lightning.report <multirun dir | run dirs...> [out=experiments/results/<study>] "
         "[kind=auto]")
EPILOG = f"""options (key=value):
  out=DIR    where report.md, report.json and the PNG figures go (default: experiments/results/<study>,
             <study> = the runs' task_name)
  kind=KIND  the figure: {' | '.join(KINDS)} | search; auto picks a temperature curve when scorer.tau
             varies, a knowledge-gain heatmap when data.graphs varies and results.json has
             knowledge_gain, learning curves (validation MAP by step, curves.json) when
             every run validated >= 5 times, else bars
  --debug    keep the full traceback of an error

kind=search reads the one-axis grid of experiments/studies/hparams_search/run.sh (one runs root holding
pass1/, pass2/, main/): a table and a plot per axis (value -> best validation macro MAP, the paper's value
marked), the optimum and the main-length check; validation only, no results.json needed. optuna=DIR adds
the grid against the Optuna study in DIR (hparams_search=optuna's run dir, or its study.json) at equal
machine-hours.

Runs are grouped by the config keys whose values differ between them (seed, paths and output directories
excluded); seed is the replicate axis (mean, 95 % CI with the t-distribution, n per cell). Unfinished or
skipped runs are left out with a warning each."""


def parse(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """(input directories, options); ``--help`` prints the usage and exits 0."""
    parser = argparse.ArgumentParser(prog="python -m uwe_lightning.report", usage=USAGE, epilog=EPILOG,
                                     description="Tables and figures of a finished (or partial) sweep. "
                                     f"{PLAIN_CLI}: it reads run directories and composes no config.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="*", help="a Hydra multirun directory, or run directories")
    args = parser.parse_args(argv)
    inputs: list[str] = []
    options = {"kind": "auto"}
    for item in args.inputs:
        key, sep, value = item.partition("=")
        if sep and key in OPTIONS:
            options[key] = value
        elif sep and re.fullmatch(r"[A-Za-z_][\w.]*", key) and not Path(item).exists():
            known = ", ".join(f"{o}=" for o in OPTIONS)
            raise ConfigError(f"unknown option {key}=...; the options are {known} (see --help)")
        else:
            inputs.append(item)
    if not inputs:
        raise ConfigError(f"no input directory; usage: {USAGE}")
    return inputs, options


def run(argv: list[str]) -> Path:
    """Build and write the report; warnings (left-out runs) and the written files go to stderr / stdout."""
    inputs, options = parse(argv)
    command = " ".join(["python -m uwe_lightning.report", *(shlex.quote(a) for a in argv)])
    if options["kind"] == "search":
        return run_search(inputs, options, command)
    if "optuna" in options:
        raise ConfigError("optuna=DIR compares the grid with an Optuna study: use it with kind=search")
    report = build_report(inputs, kind=options["kind"], command=command)
    for skipped in report["skipped"]:
        print(f"[{TOOL}] warning: left out {skipped['dir']}: {skipped['reason']}", file=sys.stderr,
              flush=True)
    out = Path(options["out"]) if options.get("out") else default_out_dir(report["study"])
    written = write_report(report, out)
    print(f"[{TOOL}] {len(report['runs'])} finished runs in {len(report['groups'])} group(s) by "
          f"{', '.join(report['group_keys']) or 'nothing (seeds only)'}; plot: {report['kind']}")
    for path in written:
        print(f"[{TOOL}] wrote {path}")
    return out


def run_search(inputs: list[str], options: dict[str, str], command: str) -> Path:
    """``kind=search``: the grid's per-axis report (:mod:`uwe_lightning.studies.search_report`)."""
    from uwe_lightning.studies.search_report import make_search_report

    if len(inputs) != 1:
        raise ConfigError(f"kind=search takes one runs root (holding pass1/, pass2/, main/), got {len(inputs)}")
    out = Path(options["out"]) if options.get("out") else default_out_dir("hparams_search")
    for path in make_search_report(inputs[0], out, command, optuna=options.get("optuna")):
        print(f"[{TOOL}] wrote {path}")
    return out


def main(argv: list[str] | None = None) -> Path:
    argv = list(sys.argv[1:] if argv is None else argv)
    take_debug_flag(argv)
    return run_reporting_user_errors(TOOL, lambda: run(argv))
