"""The validation gap between two scorers of a paired learning-curve study, by step, and a log-step trend.

    python experiments/learning_curves/gap_trend.py experiments/results/learning_curves/runs [--a softmax --b mean]

Reads ``<runs>/<scorer>-seed<s>/val_history.jsonl`` (macro MAP in percent or, from older runs, as a fraction),
prints the per-seed gaps a - b at every validation step, their mean, and a least-squares line
``gap = intercept + slope * ln(step)`` through the per-seed gaps from ``--from-step`` on: pooled (every point
as one observation, which ignores that the points of one curve are correlated) and with the seed as the unit
(the mean of the per-seed slopes with a t interval), and the step where the pooled line crosses zero.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import stats

from uwe_lightning.studies.curves import read_history
from uwe_lightning.workbench.metric_names import VAL_MACRO_MAP


def macro_by_step(run_dir: Path) -> dict[int, float]:
    """Validation macro MAP (percent) by step of one run (older runs' fractions converted by read_history)."""
    return {int(r["step"]): float(r[VAL_MACRO_MAP]) for r in read_history(run_dir) if r.get(VAL_MACRO_MAP) is not None}


def step_trend(runs: Path, a: str = "softmax", b: str = "mean", from_step: int = 100) -> tuple[list[str], dict]:
    """The per-step gap table (markdown-ish lines) and the log-step fit of a paired learning-curve study."""
    seeds = sorted(int(p.name.rsplit("seed", 1)[1]) for p in runs.glob(f"{a}-seed*"))
    gaps = {}
    for seed in seeds:
        va = macro_by_step(runs / f"{a}-seed{seed}")
        vb = macro_by_step(runs / f"{b}-seed{seed}")
        gaps[seed] = {step: va[step] - vb[step] for step in sorted(set(va) & set(vb))}
    steps = sorted(set.intersection(*(set(g) for g in gaps.values())))
    lines = ["step | " + " | ".join(f"seed {s}" for s in seeds) + " | mean"]
    for step in steps:
        row = [gaps[s][step] for s in seeds]
        lines.append(f"{step} | " + " | ".join(f"{v:+.2f}" for v in row) + f" | {np.mean(row):+.2f}")
    fit_steps = [st for st in steps if st >= from_step]
    x = np.log([st for st in fit_steps for _ in seeds])
    y = np.array([gaps[s][st] for st in fit_steps for s in seeds])
    slope, intercept = np.polyfit(x, y, 1)
    per_seed = [np.polyfit(np.log(fit_steps), [gaps[s][st] for st in fit_steps], 1)[0] for s in seeds]
    half = (stats.t.ppf(0.975, len(seeds) - 1) * np.std(per_seed, ddof=1) / np.sqrt(len(seeds))
            if len(seeds) > 1 else float("nan"))
    out = {"intercept": round(float(intercept), 3), "slope_per_ln_step": round(float(slope), 3),
           "slope_per_doubling": round(float(slope * np.log(2)), 3),
           "zero_crossing_step": round(float(np.exp(-intercept / slope))) if slope > 0 else None,
           "per_seed_slopes": [round(float(v), 3) for v in per_seed],
           "slope_95ci_seed_as_unit": round(float(half), 2), "points": int(len(y))}
    return lines, out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path)
    parser.add_argument("--a", default="softmax")
    parser.add_argument("--b", default="mean")
    parser.add_argument("--from-step", type=int, default=100)
    args = parser.parse_args(argv)
    lines, out = step_trend(args.runs, args.a, args.b, args.from_step)
    print("\n".join(lines))
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
