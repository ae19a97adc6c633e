"""``python -m uwe_lightning.publish out=DIR [tasks=Job2Skill,JobNorm] [splits=val,test] [data_dir=PACK]``.

Writes WorkBench's task splits as ``datasets`` tables (:mod:`uwe_lightning.workbench.publish`): read one with
``datasets.load_from_disk("DIR/JobNorm/test")``, evaluate on all with ``evaluate paths.data_dir=DIR``.
"""

from __future__ import annotations

import sys

from uwe_lightning.cli.errors import run_reporting_user_errors, take_debug_flag
from uwe_lightning.io import ConfigError
from uwe_lightning.workbench.dataset import SPLITS
from uwe_lightning.workbench.publish import publish_workbench
from uwe_lightning.workbench.registry import task_names
from uwe_lightning.workbench.runner import WORKBENCH_TASKS

TOOL = "publish"
KEYS = ("out", "tasks", "splits", "data_dir")
USAGE = ("usage: python -m uwe_lightning.publish out=DIR [tasks=NAME,NAME] [splits=val,test] [data_dir=PACK]\n"
         f"  tasks: default the seven WorkBench subtasks; any of {', '.join(task_names())}\n"
         "  data_dir: default $UWE_DATA_DIR (the data pack the splits are built from)")


def run(argv: list[str]) -> dict:
    opts: dict[str, str] = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in KEYS:
            raise ConfigError(f"unknown argument {arg!r}; options: {', '.join(f'{k}=...' for k in KEYS)}")
        opts[key] = value
    if not opts.get("out"):
        raise ConfigError("out: give a new directory, e.g. `python -m uwe_lightning.publish out=workbench-datasets`")
    tasks = [t for t in opts.get("tasks", "").split(",") if t] or list(WORKBENCH_TASKS)
    splits = [s for s in opts.get("splits", "").split(",") if s] or list(SPLITS)
    bad = [s for s in splits if s not in SPLITS]
    if bad:
        raise ConfigError(f"splits={','.join(bad)}: WorkBench has the splits {list(SPLITS)}")
    index = publish_workbench(opts["out"], tasks, splits, opts.get("data_dir") or None)
    written = {k: v for k, v in index["splits"].items() if "unavailable" not in v}
    for key, entry in index["splits"].items():
        what = (f"unavailable: {entry['unavailable']}" if "unavailable" in entry
                else f"{entry['queries']} queries, {entry['targets']} targets")
        print(f"[{TOOL}] {key}: {what}")
    print(f"[{TOOL}] wrote {len(written)} splits to {opts['out']} (datasets.load_from_disk('{opts['out']}/<task>/"
          f"<split>'); evaluate on them with paths.data_dir={opts['out']})")
    return index


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    take_debug_flag(argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(USAGE)
        raise SystemExit(0)
    return run_reporting_user_errors(TOOL, lambda: run(argv))
