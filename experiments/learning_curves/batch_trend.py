"""The batch-size axis of issue 28 (study 2): test macro MAP per cell, SoftMax - mean against batch size, a
log-batch trend with its uncertainty, and what that trend says at the paper's 512 skills (an extrapolation).

    python experiments/learning_curves/batch_trend.py experiments/results/batch_size/runs \
        --seed-runs experiments/results/learning_curves/runs [--out experiments/results/batch_size]

Reads every finished run below ``<runs>`` (its config says the cell: ``scorer.name``, ``data.skills_per_step``;
``results.json``: the test macro MAP / RP@10 of the exported model on the 2,000-query test subsets;
``run_info.json`` ``summary.throughput``: the texts per step it actually encoded).
The study has one seed per cell, so a cell's difference has no replicate. Two uncertainties are given for the
slope of ``gap = intercept + slope * log2(skills)``: from the fit's own residuals (n - 2 degrees of freedom,
wide with three sizes), and from the seed-to-seed spread of the paired SoftMax - mean difference measured in
study 1 (``--seed-runs``: 64 skills, 1,200 steps, so it is a borrowed noise level, not this study's), and the
prediction at 512 skills moved to the paper's 600 steps by study 1's log-step slope (both axes extrapolated).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from gap_trend import step_trend  # this folder (the script's own) is sys.path[0]
from scipy import stats

from uwe_lightning.io import atomic_write_json, atomic_write_text
from uwe_lightning.paths import RUN_INFO_FILE
from uwe_lightning.studies.aggregate import run_average
from uwe_lightning.studies.runs import Run, find_run_dirs, load_runs

PAPER_SKILLS = 512
PAPER_STEPS = 600


def finished_runs(runs: Path) -> list[Run]:
    return load_runs(find_run_dirs([runs]))[0]


def test_macro(run: Run) -> dict[str, float]:
    """The run's test macro MAP and RP@10 in percent (load_run converts older runs' fractions)."""
    average = run_average(run.results)
    return {k: float(average[k]) for k in ("map", "rp@10")}


def read_cells(runs: Path) -> dict[tuple[str, int], dict]:
    """(scorer, skills per step) -> test macro MAP, RP@10, texts per step and steps of each finished cell."""
    cells = {}
    for run in finished_runs(runs):
        throughput = json.loads((run.path / RUN_INFO_FILE).read_text())["summary"].get("throughput", {})
        cells[(run.flat["scorer.name"], int(run.flat["data.skills_per_step"]))] = {
            **test_macro(run), "texts_per_step": throughput.get("mean_texts_per_step"),
            "steps": int(run.flat["trainer.max_steps"])}
    return cells


def seed_sd(runs: Path, a: str, b: str) -> tuple[float, int]:
    """Standard deviation over seeds of the paired test macro MAP difference a - b (study 1's runs)."""
    by_key = {(run.flat["scorer.name"], run.seed): test_macro(run)["map"] for run in finished_runs(runs)}
    diffs = [by_key[(a, seed)] - by_key[(b, seed)] for (scorer, seed) in sorted(by_key)
             if scorer == a and (b, seed) in by_key]
    return float(np.std(diffs, ddof=1)), len(diffs)


def trend(cells: dict[tuple[str, int], dict], a: str, b: str, noise: tuple[float, int] | None) -> dict:
    sizes = sorted(s for (scorer, s) in cells if scorer == a and (b, s) in cells)
    gaps = [cells[(a, s)]["map"] - cells[(b, s)]["map"] for s in sizes]
    out: dict = {"sizes": sizes, "gap_map": [round(g, 3) for g in gaps],
                 "gap_rp@10": [round(cells[(a, s)]["rp@10"] - cells[(b, s)]["rp@10"], 3) for s in sizes]}
    if len(sizes) < 2:
        return out
    x, y = np.log2(sizes), np.array(gaps)
    slope, intercept = np.polyfit(x, y, 1)
    sxx = float(np.sum((x - x.mean()) ** 2))
    at_paper = intercept + slope * np.log2(PAPER_SKILLS)
    lever = 1 / len(x) + (np.log2(PAPER_SKILLS) - x.mean()) ** 2 / sxx  # variance factor of a prediction
    out.update({"intercept": round(float(intercept), 3), "slope_per_doubling": round(float(slope), 3),
                "predicted_gap_at_512": round(float(at_paper), 2)})
    dof = len(x) - 2
    if dof > 0:
        resid_sd = float(np.sqrt(np.sum((y - (intercept + slope * x)) ** 2) / dof))
        t = float(stats.t.ppf(0.975, dof))
        out["residual_fit"] = {"dof": dof, "slope_95ci": round(t * resid_sd / np.sqrt(sxx), 2),
                               "at_512_95ci": round(t * resid_sd * np.sqrt(lever), 2)}
    if noise is not None:
        sd, pairs = noise
        t = float(stats.t.ppf(0.975, pairs - 1))  # the sd itself is estimated from `pairs` seeds
        out["seed_noise_fit"] = {"cell_sd": round(sd, 3), "sd_dof": pairs - 1,
                                 "slope_95ci": round(t * sd / np.sqrt(sxx), 2),
                                 "at_512_95ci": round(t * sd * np.sqrt(lever), 2)}
    return out


def at_paper_steps(fit: dict, steps: int, step_fit: dict) -> dict:
    """The 512-skill prediction moved from this study's step count to the paper's by study 1's log-step slope
    (64 skills): assumes the two axes add, which nothing here tests."""
    shift = step_fit["slope_per_ln_step"] * np.log(PAPER_STEPS / steps)
    half = step_fit["slope_95ci_seed_as_unit"] * np.log(PAPER_STEPS / steps)
    out = {"from_steps": steps, "step_slope_per_ln_step": step_fit["slope_per_ln_step"],
           "predicted_gap": round(float(fit["predicted_gap_at_512"] + shift), 2)}
    for key in ("residual_fit", "seed_noise_fit"):
        if key in fit:
            out[f"95ci_with_{key}"] = round(float(np.hypot(fit[key]["at_512_95ci"], half)), 2)
    return out


def markdown(cells: dict[tuple[str, int], dict], fit: dict, a: str, b: str) -> str:
    lines = [f"| skills per step | texts per step seen ({b} / {a}) | {b} MAP | {a} MAP | {a} - {b} MAP "
             f"| {a} - {b} RP@10 |", "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    for s, gap, gap_rp in zip(fit["sizes"], fit["gap_map"], fit["gap_rp@10"], strict=True):
        lines.append(f"| {s} | {cells[(b, s)]['texts_per_step']} / {cells[(a, s)]['texts_per_step']} "
                     f"| {cells[(b, s)]['map']:.2f} | {cells[(a, s)]['map']:.2f} | {gap:+.2f} | {gap_rp:+.2f} |")
    if "slope_per_doubling" in fit:
        lines += ["", f"Fit `gap = {fit['intercept']:.2f} {fit['slope_per_doubling']:+.2f} x log2(skills)`; "
                  f"at {PAPER_SKILLS} skills (an extrapolation, at this study's step count): "
                  f"{fit['predicted_gap_at_512']:+.2f}."]
        for key, label in (("residual_fit", "from the fit's residuals"),
                           ("seed_noise_fit", "from study 1's seed-to-seed sd of the paired difference")):
            if key in fit:
                f = fit[key]
                dof = f.get("sd_dof", f.get("dof"))
                lines.append(f"- 95 % CI {label}: slope ± {f['slope_95ci']}, gap at {PAPER_SKILLS} ± "
                             f"{f['at_512_95ci']} (t with {dof} degree(s) of freedom"
                             + (f", sd {f['cell_sd']})" if "cell_sd" in f else ")"))
    if "at_512x600" in fit:
        p = fit["at_512x600"]
        cis = ", ".join(f"± {v}" for k, v in p.items() if k.startswith("95ci"))
        lines.append(f"- Moved to {PAPER_STEPS} steps by study 1's log-step slope ({p['step_slope_per_ln_step']:+.2f} "
                     f"per ln step, 64 skills), assuming the axes add: {p['predicted_gap']:+.2f} at "
                     f"{PAPER_SKILLS} x {PAPER_STEPS} ({cis}); an extrapolation on both axes.")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path)
    parser.add_argument("--a", default="softmax")
    parser.add_argument("--b", default="mean")
    parser.add_argument("--seed-runs", type=Path, help="study 1's runs, for the seed-to-seed noise of a - b")
    parser.add_argument("--out", type=Path, help="write batch_trend.md and batch_trend.json here")
    args = parser.parse_args(argv)
    cells = read_cells(args.runs)
    noise = seed_sd(args.seed_runs, args.a, args.b) if args.seed_runs else None
    fit = trend(cells, args.a, args.b, noise)
    if noise:
        fit["seed_noise_from"] = {"runs": str(args.seed_runs), "pairs": noise[1]}
        if "predicted_gap_at_512" in fit:
            steps = {cells[key]["steps"] for key in cells}
            fit["at_512x600"] = at_paper_steps(fit, steps.pop(), step_trend(args.seed_runs, args.a, args.b)[1])
    text = markdown(cells, fit, args.a, args.b)
    print(text + json.dumps(fit))
    if args.out:
        atomic_write_text(args.out / "batch_trend.md", text)
        atomic_write_json(args.out / "batch_trend.json", fit)
    return fit


if __name__ == "__main__":
    main()
