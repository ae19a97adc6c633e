"""Compare finished training runs that differ in ``data.sampling`` on WorkBench validation.

    python experiments/data/compare_sampling.py outputs/sampling_cmp/skill_uniform outputs/sampling_cmp/per_graph \
        --out experiments/results/sampling_cmp

Reads each run's ``run_info.json`` (config, throughput), ``val_history.jsonl`` (validation per step) and the CSV
logger's ``metrics.csv`` (skill rows and texts per graph per step) and writes ``sampling_cmp.md`` / ``.json``.
Needs no test results (run with ``test.tasks=[]`` to compare on validation only).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from uwe_lightning.io import atomic_write_json, atomic_write_text
from uwe_lightning.studies.curves import read_history
from uwe_lightning.workbench.metric_names import VAL_MACRO_MAP, upgrade_run_summary


def step_means(run: Path) -> dict[str, float]:
    """Mean over logged steps of train/skills and train/<G>/texts, rows_without_positive."""
    files = sorted(run.glob("csv/*/metrics.csv"))
    if not files:
        return {}
    sums: dict[str, list[float]] = {}
    with files[-1].open() as handle:
        for row in csv.DictReader(handle):
            for key, value in row.items():
                if value and (key == "train/skills" or key.endswith(("/texts", "/rows_without_positive"))):
                    sums.setdefault(key, []).append(float(value))
    return {key: sum(v) / len(v) for key, v in sorted(sums.items())}


def read_run(run: Path) -> dict:
    info = json.loads((run / "run_info.json").read_text())
    history = read_history(run)  # percent, today's names; a resumed run's repeated step counted once
    summary = upgrade_run_summary(info.get("summary") or {})
    return {"dir": str(run), "sampling": info["config"]["data"].get("sampling", "skill_uniform"),
            "skills_per_step": info["config"]["data"]["skills_per_step"], "history": history,
            "throughput": summary.get("throughput"), "best_val": summary.get("best_val"), "steps": step_means(run)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("experiments/results/sampling_cmp"))
    args = parser.parse_args(argv)
    runs = [read_run(r) for r in args.runs]
    tasks = sorted({k.split("/")[1] for r in runs for h in r["history"] for k in h if k.endswith("/map")
                    and not k.startswith("val/macro")})
    lines = ["# data.sampling on WorkBench validation", "", "Runs: " + ", ".join(f"`{r['dir']}`" for r in runs), "",
             "| sampling | S | step | " + " | ".join(tasks) + " | macro MAP |", "|---|---|---|" + "---|" * (len(tasks) + 1)]
    for r in runs:
        for h in r["history"]:
            cells = [f"{h[f'val/{t}/map']:.2f}" if f"val/{t}/map" in h else "-" for t in tasks]
            lines.append(f"| {r['sampling']} | {r['skills_per_step']} | {h['step']} | " + " | ".join(cells)
                         + f" | {h[VAL_MACRO_MAP]:.2f} |")
    lines += ["", "| sampling | best step | best val macro MAP | steps/s | mean texts/step | skill rows | J / V / A texts |",
              "|---|---|---|---|---|---|---|"]
    for r in runs:
        best, tp, s = r["best_val"] or {}, r["throughput"] or {}, r["steps"]
        texts = " / ".join(f"{s.get(f'train/{g}/texts', float('nan')):.1f}" for g in "JVA")
        lines.append(f"| {r['sampling']} | {best.get('step', '-')} | {best.get(VAL_MACRO_MAP, float('nan')):.2f} | "
                     f"{tp.get('steps_per_s', '-')} | {tp.get('mean_texts_per_step', '-')} | "
                     f"{s.get('train/skills', float('nan')):.1f} | {texts} |")
    atomic_write_json(args.out / "sampling_cmp.json", runs)
    atomic_write_text(args.out / "sampling_cmp.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return {"runs": runs}


if __name__ == "__main__":
    main()
