"""Combine zero-shot WorkBench results into one table next to the paper's Table 2 MPNet row.

    python experiments/studies/zero_shot_table.py experiments/results/zero_shot > experiments/results/zero_shot/table.md

The paper's macro average covers 7 subtasks (6 task types, SkillSim included); SkillSim is not in the data pack,
so the paper row is also re-averaged over the 5 task types we can evaluate, which is the comparable number.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from uwe_lightning.workbench.metric_names import in_percent
from uwe_lightning.workbench.metrics import macro_average
from uwe_lightning.workbench.registry import get_task

#: Table 2, row "MPNet" (all-mpnet-base-v2, zero-shot), in percent.
PAPER_MPNET = {
    "Job2Skill": (11.8, 29.0), "Skill2Job": (29.0, 40.3), "JobNorm": (32.9, 50.8), "SkillNorm": (84.7, 93.2),
    "SkillSim": (10.1, 30.7), "SkillExtr-T": (31.2, 49.8), "SkillExtr-H": (19.3, 36.7),
}
PAPER_MPNET_MACRO = (32.3, 47.9)
ORDER = ["Job2Skill", "Skill2Job", "JobNorm", "SkillNorm", "SkillSim", "SkillExtr-T", "SkillExtr-H"]


def main(results_dir: Path) -> str:
    runs = {p.parent.name: in_percent(json.loads(p.read_text())) for p in sorted(results_dir.glob("*/results.json"))}
    header = "| model | " + " | ".join(f"{t} MAP | RP@10" for t in ORDER) + " | macro MAP | macro RP@10 |"
    lines = [header, "|---|" + "---:|" * (2 * len(ORDER) + 2)]

    def row(name: str, per_task: dict, macro: tuple[float, float]) -> str:
        cells = []
        for t in ORDER:
            cells += [f"{per_task[t][0]:.1f}", f"{per_task[t][1]:.1f}"] if t in per_task else ["n/a", "n/a"]
        return f"| {name} | " + " | ".join(cells) + f" | {macro[0]:.1f} | {macro[1]:.1f} |"

    covered: list[str] = []
    for name, res in runs.items():
        per_task = {t: (r["map"], r["rp@10"]) for t, r in res["tasks"].items()}
        covered = res["macro"]["covers"]
        lines.append(row(f"{name} (ours)", per_task, (res["macro"]["map"], res["macro"]["rp@10"])))
    lines.append(row("MPNet (paper, Table 2)", PAPER_MPNET, PAPER_MPNET_MACRO))
    if covered:
        groups = {t: get_task(t).group for t in covered}
        paper = {t: {"map": PAPER_MPNET[t][0], "rp@10": PAPER_MPNET[t][1]} for t in covered}
        m = macro_average(paper, groups)
        subset = {t: v for t, v in PAPER_MPNET.items() if t in covered}
        lines.append(row("MPNet (paper), macro over our tasks", subset, (m["map"], m["rp@10"])))
    lines.append("")
    lines.append(f"Macro averages of our rows cover {', '.join(covered)} (SkillSim data is not in the pack); "
                 "the paper's own macro covers all 7 subtasks.")
    for name, res in runs.items():
        s = res.get("seconds", {})
        lines.append(f"- {name}: {s.get('n_distinct_texts', 0):,} distinct texts encoded in "
                     f"{s.get('encode_distinct_texts', 0):.0f} s, total {s.get('total', 0):.0f} s.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(main(Path(sys.argv[1] if len(sys.argv) > 1 else "experiments/results/zero_shot")), end="")
