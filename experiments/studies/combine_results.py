"""Macro MAP / RP@10 of tasks taken from several results.json files (the paper's task-type average).

    python experiments/studies/combine_results.py <results.json> [<results.json> ...] [--tasks A,B,...]

Later files replace earlier ones task by task; ``--tasks`` keeps those tasks only. Used to put the zero-shot
model on exactly the trained model's test tasks (e.g. SkillNorm@heldout in place of the full SkillNorm).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from uwe_lightning.workbench.metric_names import in_percent
from uwe_lightning.workbench.metrics import macro_average
from uwe_lightning.workbench.registry import get_task


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path)
    parser.add_argument("--tasks", default=None, help="comma-separated task names to keep")
    args = parser.parse_args(argv)
    per_task: dict[str, dict] = {}
    for path in args.results:
        per_task.update(in_percent(json.loads(path.read_text()))["tasks"])  # older files: fractions
    if args.tasks:
        keep = args.tasks.split(",")
        missing = [t for t in keep if t not in per_task]
        if missing:
            parser.error(f"--tasks: {missing} in none of the results files")
        per_task = {t: per_task[t] for t in keep}
    macro = macro_average(per_task, {name: get_task(name).group for name in per_task})
    for name, row in per_task.items():
        print(f"{name}: MAP {row['map']:.2f} RP@10 {row['rp@10']:.2f}")
    print(f"macro ({len(per_task)} tasks): MAP {macro['map']:.2f} RP@10 {macro['rp@10']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
