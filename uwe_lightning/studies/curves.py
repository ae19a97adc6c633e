"""Learning curves: validation macro MAP (and per task) against the training step, from each run's
``val_history.jsonl``, reduced over seeds per group (mean, 95 % CI where n >= 2).

The plots are chosen by ``kind=learning`` (or automatically when every run validated at least :data:`MIN_POINTS`
times and nothing else asks for another figure); ``curves.json`` and the by-step table are written whenever every
run validated at least once (a study that validates only at step 0 and at the end gets its two points). It holds
one record per run (percent)::

    {"run", "group", "scorer", "seed", "skills_per_step", "steps": [...], "val_macro_map": [...], "tasks": {...}}

(the layout issue 28 asked for; ``tasks`` maps each validation task to its series).

and the report gets, per group and step, the mean curve, and the first validation step at which each group's
mean reaches the reference group's (the first group, or the one named ``mean``), or ``None`` if it never does.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from uwe_lightning.io import atomic_write_json
from uwe_lightning.studies.runs import Run
from uwe_lightning.studies.stats import summarize
from uwe_lightning.workbench.metric_names import MAP, VAL, VAL_MACRO_MAP, metric_name, upgrade_val_record

VAL_HISTORY = "val_history.jsonl"
MIN_POINTS = 5
MACRO = VAL_MACRO_MAP
CURVES_JSON = "curves.json"
CURVE_KEY = "val_macro_map"  # a record's macro series in curves.json (val/macro/map by step)


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """The validations of one run, by step (a resumed run may repeat a step: the last record wins), in percent
    under today's names (an older run's fractions and ``val/macro_map`` are converted)."""
    path = Path(run_dir) / VAL_HISTORY
    if not path.is_file():
        return []
    by_step: dict[int, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            record = upgrade_val_record(json.loads(line))
            by_step[int(record["step"])] = record
    return [by_step[s] for s in sorted(by_step)]


def has_curve(run: Run) -> bool:
    return len(read_history(run.path)) >= MIN_POINTS


def _score(value: Any) -> float | None:
    return None if value is None else round(float(value), 4)


def run_record(run: Run, group: str) -> dict[str, Any]:
    """One run's curve (percent), as ``curves.json`` holds it."""
    history = read_history(run.path)
    prefix, suffix = metric_name(VAL, "", MAP).split("//")  # val/<task>/map
    tasks = sorted({k[len(prefix) + 1:-len(suffix) - 1] for r in history for k in r
                    if k.startswith(prefix + "/") and k.endswith("/" + suffix) and k != MACRO})
    return {
        "run": str(run.path), "group": group, "scorer": run.flat.get("scorer.name"), "seed": run.seed,
        "skills_per_step": run.flat.get("data.skills_per_step"),
        "steps": [int(r["step"]) for r in history],
        CURVE_KEY: [_score(r.get(MACRO)) for r in history],
        "tasks": {t: [_score(r.get(metric_name(VAL, t, MAP))) for r in history] for t in tasks},
    }


def _group_curve(records: Sequence[dict[str, Any]], key: str = CURVE_KEY, task: str | None = None
                 ) -> dict[str, Any]:
    """Mean and CI per step over the group's runs (steps that every run of the group has)."""
    steps = sorted(set.intersection(*(set(r["steps"]) for r in records))) if records else []
    points = []
    for step in steps:
        values = []
        for r in records:
            series, at = (r["tasks"].get(task, []) if task else r[key]), r["steps"].index(step)
            values.append(series[at] if at < len(series) else None)
        points.append({"step": step, **summarize(values).to_dict()})
    return {"steps": steps, "points": points}


def reference_group(labels: Sequence[str]) -> str:
    return "mean" if "mean" in labels else labels[0]


def first_catch_up(curve: dict[str, Any], reference: dict[str, Any]) -> int | None:
    """The first step (after 0) at which ``curve``'s mean reaches ``reference``'s, or None."""
    ref = {p["step"]: p["mean"] for p in reference["points"]}
    for p in curve["points"]:
        if p["step"] > 0 and p["step"] in ref and p["mean"] is not None and ref[p["step"]] is not None \
                and p["mean"] >= ref[p["step"]]:
            return p["step"]
    return None


def build_curves(runs: Sequence[Run], group_of: dict[int, str], labels: Sequence[str]) -> dict[str, Any]:
    """Every run's record, each group's mean curves (macro and per task), and the catch-up steps."""
    records = [run_record(run, group_of[id(run)]) for run in runs]
    groups: dict[str, Any] = {}
    for label in labels:
        members = [r for r in records if r["group"] == label and r["steps"]]
        tasks = sorted({t for r in members for t in r["tasks"]})
        groups[label] = {"n_runs": len(members), "macro": _group_curve(members),
                         "tasks": {t: _group_curve(members, task=t) for t in tasks}}
    ref = reference_group(list(labels))
    catch_up = {label: first_catch_up(g["macro"], groups[ref]["macro"]) for label, g in groups.items()
                if label != ref}
    return {"reference": ref, "records": records, "groups": groups, "first_step_reaching_reference": catch_up}


def write_curves_json(report: dict[str, Any], out_dir: Path) -> Path | None:
    """``curves.json``: the per-run records."""
    curves = report.get("learning_curves")
    if not curves:
        return None
    path = Path(out_dir) / CURVES_JSON
    atomic_write_json(path, curves["records"])
    return path


def curve_table(report: dict[str, Any]) -> list[str]:
    """Markdown: validation macro MAP (%) per step and group (mean ± CI, n), then the catch-up steps."""
    curves = report.get("learning_curves")
    if not curves:
        return []
    labels = list(curves["groups"])
    steps = sorted({s for g in curves["groups"].values() for s in g["macro"]["steps"]})
    lines = ["| step | " + " | ".join(labels) + " |", "|---:|" + "---:|" * len(labels)]
    for step in steps:
        cells = []
        for label in labels:
            point = next((p for p in curves["groups"][label]["macro"]["points"] if p["step"] == step), None)
            if point is None or point["mean"] is None:
                cells.append("")
                continue
            ci = f" ± {point['ci95']:.2f}" if point.get("ci95") is not None else ""
            cells.append(f"{point['mean']:.2f}{ci} (n={point['n']})")
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    lines += ["", f"First validation step at which each group's mean reaches `{curves['reference']}`'s:", ""]
    for label, step in curves["first_step_reaching_reference"].items():
        lines.append(f"- {label}: {'never (within the run)' if step is None else f'step {step}'}")
    return lines


def plot_learning_curves(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """``learning_curves.png`` (macro: the group mean, a 95 % CI band, the seeds as thin lines) and
    ``learning_curves_tasks.png`` (one panel per task, group means)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from uwe_lightning.io import atomic_save_figure

    curves = report.get("learning_curves")
    if not curves:
        return []
    fig, ax = plt.subplots(figsize=(8, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, group) in enumerate(curves["groups"].items()):
        color = colors[i % len(colors)]
        for r in (r for r in curves["records"] if r["group"] == label):
            ax.plot(r["steps"], r[CURVE_KEY], color=color, lw=0.6, alpha=0.5)
        pts = [p for p in group["macro"]["points"] if p["mean"] is not None]
        xs, ys = [p["step"] for p in pts], [p["mean"] for p in pts]
        ax.plot(xs, ys, color=color, lw=2, label=f"{label} (n={group['n_runs']})")
        band = [(p["step"], p["mean"] - p["ci95"], p["mean"] + p["ci95"]) for p in pts if p.get("ci95") is not None]
        if band:
            ax.fill_between([b[0] for b in band], [b[1] for b in band], [b[2] for b in band], color=color,
                            alpha=0.15, lw=0)
    ax.set_xlabel("training step")
    ax.set_ylabel("validation macro MAP (%)")
    band = ("95 % CI band" if all(g["n_runs"] >= 2 for g in curves["groups"].values())
            else "95 % CI band where n ≥ 2")
    ax.set_title(f"{report['study']}: validation macro MAP (mean, {band}; seeds thin)")
    ax.grid(alpha=0.3)
    ax.legend()
    written = [atomic_save_figure(fig, Path(out_dir) / "learning_curves.png")]
    tasks = sorted({t for g in curves["groups"].values() for t in g["tasks"]})
    if tasks:
        cols = min(3, len(tasks))
        rows = -(-len(tasks) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
        for ax, task in zip(axes.flat, tasks, strict=False):
            for i, (label, group) in enumerate(curves["groups"].items()):
                pts = [p for p in group["tasks"].get(task, {"points": []})["points"] if p["mean"] is not None]
                ax.plot([p["step"] for p in pts], [p["mean"] for p in pts], color=colors[i % len(colors)],
                        label=label)
            ax.set_title(task, fontsize=9)
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[len(tasks):]:
            ax.axis("off")
        axes.flat[0].legend(fontsize=8)
        fig.suptitle(f"{report['study']}: validation MAP per task (%), group means")
        fig.tight_layout()
        written.append(atomic_save_figure(fig, Path(out_dir) / "learning_curves_tasks.png"))
    return written
