"""The zero-shot O*NET 29.2 table: split sizes, then MAP / RP@10 per model on the test splits.

    python experiments/studies/onet_table.py experiments/results/onet > experiments/results/onet/table.md

Reads ``<dir>/<model>/results.json`` (written by ``python -m uwe_lightning.evaluate ... publish=<dir>/<model>``);
the validation sizes come from the shipped pack manifest (``uwe_lightning/data/sources.json``), which records the
size of every split built from the pack. The O*NET average is the suite's own (``results["suites"]["onet"]``),
never part of the WorkBench macro average.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's package, not an installed one

from uwe_lightning.data.pack import load_manifest  # noqa: E402
from uwe_lightning.workbench.metric_names import in_percent  # noqa: E402

TASKS = ["ONET-JobNorm", "ONET-Occ2Tech", "ONET-Tech2Occ", "ONET-Task2Occ"]
WHAT = {
    "ONET-JobNorm": "alternate title -> occupation",
    "ONET-Occ2Tech": "occupation -> technology skills",
    "ONET-Tech2Occ": "technology skill -> occupations",
    "ONET-Task2Occ": "task statement -> occupation",
}


def main(results_dir: Path) -> str:
    runs = {p.parent.name: in_percent(json.loads(p.read_text())) for p in sorted(results_dir.glob("*/results.json"))}
    sizes = load_manifest().task_sizes
    lines = ["| task | query -> target | val (queries x targets) | test (queries x targets) |", "|---|---|---:|---:|"]
    for task in TASKS:
        val, test = sizes[f"{task}/val"], sizes[f"{task}/test"]
        lines.append(f"| {task} | {WHAT[task]} | {val[0]:,} x {val[1]:,} | {test[0]:,} x {test[1]:,} |")
    lines += ["", "| model | " + " | ".join(f"{t} MAP | RP@10" for t in TASKS) + " | O*NET avg MAP | RP@10 |",
              "|---|" + "---:|" * (2 * len(TASKS) + 2)]
    for name, res in runs.items():
        cells = []
        for task in TASKS:
            row = res["tasks"].get(task)
            cells += [f"{row['map']:.2f}", f"{row['rp@10']:.2f}"] if row else ["n/a", "n/a"]
        average = res.get("suites", {}).get("onet", {})
        cells += [f"{average['map']:.2f}" if average.get("map") is not None else "n/a",
                  f"{average['rp@10']:.2f}" if average.get("rp@10") is not None else "n/a"]
        lines.append(f"| {name} (`{res['model']}`) | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Test splits, all queries. The O*NET average is the mean over the four tasks (each its own type); it "
                 "is not part of the WorkBench macro average.")
    for name, res in runs.items():
        s = res.get("seconds", {})
        lines.append(f"- {name}: {s.get('n_distinct_texts', 0):,} distinct texts encoded in "
                     f"{s.get('encode_distinct_texts', 0):.0f} s, total {s.get('total', 0):.0f} s (shared machine, "
                     "see timing.log for the load).")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(main(Path(sys.argv[1] if len(sys.argv) > 1 else "experiments/results/onet")), end="")
