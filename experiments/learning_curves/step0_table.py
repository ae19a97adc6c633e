"""Issue 28, study 3: the step-0 table (untrained backbone x scorer) from ``step0_scorers.sh``'s runs.

    python experiments/learning_curves/step0_table.py <RUNS> > experiments/results/learning_curves/step0.md

One row per backbone and scorer: validation MAP per task (percent) and the WorkBench macro average; the last
column is the scorer's macro minus mean pooling's on the same backbone (the step-0 gap a trained token scorer
has to make up first).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from uwe_lightning.workbench.metric_names import in_percent

SCORERS = ("mean", "maxsim", "softmax_ymean", "softmax")


def rows(runs: Path) -> list[tuple[str, str, dict]]:
    found = []
    for path in sorted(runs.glob("*/results.json")):
        backbone, _, scorer = path.parent.name.partition("-")
        found.append((backbone, scorer, in_percent(json.loads(path.read_text()))))  # older runs: fractions
    return sorted(found, key=lambda r: (r[0], SCORERS.index(r[1]) if r[1] in SCORERS else 99))


def table(found: list[tuple[str, str, dict]]) -> str:
    tasks = list(found[0][2]["tasks"]) if found else []
    mean_macro = {b: r["macro"]["map"] for b, s, r in found if s == "mean"}
    lines = ["| backbone | scorer | " + " | ".join(tasks) + " | macro MAP | vs mean |",
             "|---|---|" + "---:|" * (len(tasks) + 2)]
    for backbone, scorer, res in found:
        cells = [f"{res['tasks'][t]['map']:.2f}" for t in tasks]
        macro = res["macro"]["map"]
        gap = f"{macro - mean_macro[backbone]:+.2f}" if backbone in mean_macro else "n/a"
        lines.append(f"| {backbone} | {scorer} | " + " | ".join(cells) + f" | **{macro:.2f}** | {gap} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if len(sys.argv) != 2 or not Path(sys.argv[1]).is_dir():
        sys.exit("usage: python experiments/learning_curves/step0_table.py <RUNS directory of step0_scorers.sh>")
    sys.stdout.write(table(rows(Path(sys.argv[1]))))
